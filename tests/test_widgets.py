"""atcourse.widgets: the explorer (controls -> draw -> picture) and freezing widget outputs."""

import base64
import json
import re
from pathlib import Path

import ipywidgets as widgets
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from atcourse import widgets as aw  # noqa: E402

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb"))
# what the before-stop check and a reader without a kernel would see
STAND_IN = re.compile(r"(^|[^0-9])0%\||^\s*[VH]Box\(")


def png_size(png: bytes) -> tuple[int, int]:
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def make_draw(calls):
    def draw(index, p=2.0, reduce="mean", flip=False):
        calls.append({"index": index, "p": p, "reduce": reduce, "flip": flip})
        fig, ax = plt.subplots(figsize=(3.0, 2.0), dpi=100)
        ax.imshow([[index, p], [len(reduce), float(flip)]], vmin=0, vmax=8)
        ax.set_title(f"#{index} p={p} {reduce}", fontsize=7)
        return fig

    return draw


def test_specs_become_controls_and_start_values_apply():
    calls = []
    reduce = widgets.Dropdown(options=["mean", "sum", "max"], value="mean")
    ex = aw.explore(make_draw(calls), {"index": range(0, 8), "p": (0.5, 8.0, 0.5),
                                       "reduce": reduce, "flip": False},
                    start={"index": 3, "reduce": "max"})  # fmt: skip
    c = ex.controls
    assert isinstance(c["index"], widgets.IntSlider) and (c["index"].min, c["index"].max) == (0, 7)
    assert isinstance(c["p"], widgets.FloatSlider) and c["p"].step == 0.5
    assert c["reduce"] is reduce and reduce.description == "reduce"
    assert isinstance(c["flip"], widgets.Checkbox)
    assert not c["index"].continuous_update and not c["p"].continuous_update
    assert calls == [{"index": 3, "p": 2.0, "reduce": "max", "flip": False}]  # drawn once
    assert ex.values == calls[0]
    assert isinstance(aw.explore(make_draw([]), {"index": (0, 4)}).controls["index"],
                      widgets.IntSlider)  # fmt: skip


def test_moving_a_control_redraws_and_the_first_view_stays():
    calls = []
    ex = aw.explore(make_draw(calls), {"index": range(8), "reduce": ["mean", "max"]})
    first = bytes(ex.picture.value)
    assert first == ex.first_view and first.startswith(b"\x89PNG")
    ex.controls["index"].value = 5
    assert calls[-1]["index"] == 5 and bytes(ex.picture.value) != first
    ex.controls["reduce"].value = "max"
    assert calls[-1] == {"index": 5, "p": 2.0, "reduce": "max", "flip": False}
    assert len(calls) == 3
    assert ex.first_view == first  # the stored picture is the first view


def test_picture_is_sharp_and_shown_at_the_figure_size_not_stretched():
    ex = aw.explore(make_draw([]), {"index": range(4)}, scale=2.0)
    width, height = png_size(bytes(ex.picture.value))
    css_w = int(ex.picture.layout.width.removesuffix("px"))
    assert width == pytest.approx(2 * css_w, abs=1)  # two pixels per CSS pixel
    assert css_w <= 300  # a 3-inch figure at 100 dpi (tight box): not the output's width
    assert ex.picture.layout.max_width == "100%" and ex.picture.layout.height == "auto"
    assert ex.widget.layout.align_items == "flex-start"  # the VBox does not stretch it
    data, meta = ex._repr_mimebundle_()
    assert meta["image/png"]["width"] == css_w
    assert meta["image/png"]["height"] == pytest.approx(height / 2, abs=1)


def test_output_holds_the_widget_and_the_picture_of_the_first_view():
    ex = aw.explore(make_draw([]), {"index": range(4), "p": (1.0, 4.0)}, title="attention")
    ex.controls["index"].value = 2
    data, _ = ex._repr_mimebundle_()
    assert data[aw.WIDGET_VIEW]["model_id"] == ex.widget.model_id
    assert base64.b64decode(data["image/png"]) == ex.first_view != bytes(ex.picture.value)
    assert data["text/plain"].startswith("attention: an explorer over index, p")
    assert not STAND_IN.search(data["text/plain"])
    assert len(plt.get_fignums()) == 0  # every drawn figure was closed


def test_a_failed_redraw_is_shown_in_the_explorer():
    def draw(index):
        if index == 2:
            raise ValueError("no image 2")
        fig = plt.figure(figsize=(1, 1))
        return fig

    ex = aw.explore(draw, {"index": range(4)})
    before = bytes(ex.picture.value)
    with pytest.raises(ValueError, match="no image 2"):
        ex.controls["index"].value = 2
    assert "could not draw {&#x27;index&#x27;: 2}: ValueError: no image 2" in ex.status.value
    assert bytes(ex.picture.value) == before
    ex.controls["index"].value = 3
    assert ex.status.value == ""


def test_bad_input_is_named():
    draw = make_draw([])
    with pytest.raises(ValueError, match="at least one control"):
        aw.explore(draw, {})
    with pytest.raises(TypeError, match="control 'index' is 'abc'; give an ipywidgets control"):
        aw.explore(draw, {"index": "abc"})
    with pytest.raises(ValueError, match="control 'index': min 3 is not below max 1"):
        aw.explore(draw, {"index": (3, 1)})
    with pytest.raises(TypeError, match=r"draw\(\) must accept the controls \['index', 'zoom'\]"):
        aw.explore(draw, {"index": range(3), "zoom": (1, 4)})
    with pytest.raises(ValueError, match="start names 'layer', which is no control"):
        aw.explore(draw, {"index": range(3)}, start={"layer": 1})
    with pytest.raises(ValueError, match="start value 'x' does not fit control 'reduce'"):
        aw.explore(draw, {"index": range(3), "reduce": ["mean"]}, start={"reduce": "x"})
    with pytest.raises(TypeError, match="returned NoneType; it must return the matplotlib Figure"):
        aw.explore(lambda index: None, {"index": range(3)})
    with pytest.raises(ValueError, match="per_row"):
        aw.explore(draw, {"index": range(3)}, per_row=0)


# ----------------------------------------------------------------------------- freeze


def _tqdm_widget_bar(desc, total, done, postfix=None, leave=True):
    """A real tqdm.notebook bar's widgets, driven like the trainer drives its bar."""
    from tqdm.notebook import tqdm

    bar = tqdm(total=total, desc=desc, leave=True, mininterval=0)
    bar.update(done)
    if postfix:
        bar.set_postfix(postfix)
    container = bar.container
    bar.close()
    if not leave:  # what tqdm.notebook leaves of a leave=False bar in a saved state
        container.layout.visibility = "hidden"
    return container


def _notebook(outputs_per_cell, with_state=True):
    state = widgets.Widget.get_manager_state() if with_state else None
    cells = [
        {"cell_type": "code", "id": f"c{i}", "metadata": {}, "source": "", "outputs": outs,
         "execution_count": i}
        for i, outs in enumerate(outputs_per_cell)
    ]  # fmt: skip
    nb = {"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    if state:
        nb["metadata"]["widgets"] = {aw.WIDGET_STATE: state}
    return nb


def _view(widget, plain):
    data = {aw.WIDGET_VIEW: {"model_id": widget.model_id, "version_major": 2,
                             "version_minor": 0}, "text/plain": plain}  # fmt: skip
    return {"output_type": "display_data", "data": data, "metadata": {}}


def test_freeze_turns_widget_outputs_into_what_they_showed():
    done = _tqdm_widget_bar("at-wrn_16_1-s0", 936, 936, {"loss": "0.696", "test": "93.2%"})
    loaded = _tqdm_widget_bar("kd-wrn_16_1-s0", 936, 936)
    hidden = _tqdm_widget_bar("alignment", 8, 8, leave=False)
    stopped = _tqdm_widget_bar("interrupted", 10, 3)
    picture = widgets.Image(value=b"\x89PNG\r\n\x1a\nfake", format="png")
    old_explorer = widgets.VBox([widgets.HBox([widgets.IntSlider()]), picture])
    ex = aw.explore(make_draw([]), {"index": range(3)})
    data, meta = ex._repr_mimebundle_()
    explorer_out = {"output_type": "display_data", "data": data, "metadata": meta}
    stream = {"output_type": "stream", "name": "stdout", "text": "AT weight 1000\n"}
    nb = _notebook([
        [stream, _view(done, "at-wrn_16_1-s0:   0%|          | 0/936 [00:00<?, ?step/s]"),
         _view(loaded, "kd-wrn_16_1-s0: 100%|##########| 936/936")],
        [_view(hidden, "alignment:   0%|          | 0/8"), _view(stopped, "interrupted: 0%|")],
        [_view(old_explorer, "VBox(children=(HBox(children=(IntSlider(value=0, ..."),
         explorer_out],
    ])  # fmt: skip
    counts = aw.freeze(nb)
    assert counts == {"bar": 3, "hidden bar": 1, "picture": 1, "explorer": 1, "state": 1}
    assert "widgets" not in nb["metadata"]
    first, second, third = (c["outputs"] for c in nb["cells"])
    assert first[0] == stream
    text = first[1]["data"]["text/plain"]
    final = r"at-wrn_16_1-s0: 100%\|██████████\| 936/936 \[00:0\d<00:00, +[\d.]+it/s, loss=0\.696"
    assert re.fullmatch(final + r", test=93\.2%\]", text), text
    assert first[1]["data"].keys() == {"text/plain"}
    assert first[2]["data"]["text/plain"].startswith("kd-wrn_16_1-s0: 100%|██████████| 936/936")
    assert len(second) == 1  # the leave=False bar is gone, as it was on screen
    assert second[0]["data"]["text/plain"].startswith("interrupted:  30%|███       | 3/10")
    assert base64.b64decode(third[0]["data"]["image/png"]) == b"\x89PNG\r\n\x1a\nfake"
    assert aw.WIDGET_VIEW not in third[1]["data"] and aw.WIDGET_VIEW not in third[1]["metadata"]
    assert base64.b64decode(third[1]["data"]["image/png"]) == ex.first_view
    for cell in nb["cells"]:
        for out in cell["outputs"]:
            assert not STAND_IN.search("".join(out.get("data", {}).get("text/plain", "")))
    assert aw.freeze(nb) == {}  # nothing left to do


def test_freeze_says_when_a_widget_state_was_not_stored():
    bar = _tqdm_widget_bar("at-s0", 10, 10)
    box = widgets.VBox([widgets.IntSlider()])
    nb = _notebook([[_view(bar, "at-s0:   0%|          | 0/10"), _view(box, "VBox(children=")]],
                   with_state=False)  # fmt: skip
    assert aw.freeze(nb) == {"unstored": 2}
    texts = [o["data"]["text/plain"] for o in nb["cells"][0]["outputs"]]
    assert texts == [
        "at-s0: a progress bar (its final state was not stored; run the cell to see it)",
        "an interactive widget (its state was not stored; run the cell to use it)",
    ]


def test_freeze_file_and_command(tmp_path, capsys):
    bar = _tqdm_widget_bar("demo", 4, 4)
    nb = _notebook([[_view(bar, "demo:   0%|")]])
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False), encoding="utf-8")
    clean = tmp_path / "clean.ipynb"
    clean.write_text(json.dumps(_notebook([[]], with_state=False), indent=1), encoding="utf-8")
    before = clean.stat().st_mtime_ns
    assert aw.main([str(path), str(clean)]) == 0
    printed = capsys.readouterr().out
    assert f"{path}: 1 bar, 1 state" in printed and f"{clean}: nothing" in printed
    text = path.read_text(encoding="utf-8")
    assert "100%|██████████| 4/4" in text and not text.endswith("\n")  # papermill's layout
    assert clean.stat().st_mtime_ns == before  # unchanged files are not rewritten
    (tmp_path / "bad.ipynb").write_text("{")
    with pytest.raises(ValueError, match="cannot read notebook .*bad.ipynb"):
        aw.freeze_file(tmp_path / "bad.ipynb")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_committed_notebooks_carry_no_widget_stand_ins(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert "widgets" not in nb["metadata"], "stored widget state: run python -m atcourse.widgets"
    for cell in nb["cells"]:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            assert aw.WIDGET_VIEW not in data, f"widget output in cell {cell['id']}"
            assert not STAND_IN.search("".join(data.get("text/plain", ""))), cell["id"]


def test_controls_from_specs_start_at_the_draw_functions_defaults():
    calls = []
    given = widgets.FloatSlider(value=1.5, min=0.5, max=8.0)
    aw.explore(make_draw(calls), {"index": range(8), "p": given,
                                  "reduce": ["sum", "mean", "max"]})  # fmt: skip
    # index has no default: its range's start; p is a given control: its own value;
    # reduce's default "mean" is not the list's first choice
    assert calls == [{"index": 0, "p": 1.5, "reduce": "mean", "flip": False}]
    with pytest.raises(ValueError, match=r"start value 9 does not fit control 'index': "
                                         r"outside \[0, 7\]"):  # fmt: skip
        aw.explore(make_draw([]), {"index": range(8)}, start={"index": 9})
    with pytest.raises(ValueError, match="start value 'mean' does not fit control 'reduce'"):
        aw.explore(make_draw([]), {"index": range(8), "reduce": ["sum", "max"]})


def test_pre_save_hook_freezes_a_saved_notebook_and_leaves_other_files():
    bar = _tqdm_widget_bar("at-s0", 10, 10)
    nb = _notebook([[_view(bar, "at-s0:   0%|")]])
    model = {"type": "notebook", "content": nb}
    aw.pre_save_hook(model, path="x.ipynb", contents_manager=None)
    saved = model["content"]
    assert "widgets" not in saved["metadata"]
    assert saved["cells"][0]["outputs"][0]["data"]["text/plain"].startswith("at-s0: 100%|")
    assert aw.WIDGET_VIEW in nb["cells"][0]["outputs"][0]["data"]  # a copy was frozen
    text = {"type": "file", "content": "VBox(", "format": "text"}
    aw.pre_save_hook(text, path="x.txt", contents_manager=None)
    assert text["content"] == "VBox("
