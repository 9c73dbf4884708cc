"""atcourse.progress: a text bar in a terminal, one plain output updated in place in a kernel."""

import io
import json
import sys
import time

import pytest

from atcourse import progress
from atcourse.progress import NotebookBar, progress_bar


class FakeDisplay:
    """Records what IPython's display would send: one output per display id, and updates."""

    def __init__(self):
        self.outputs: list[dict] = []
        self.updates = 0

    def __call__(self, data, raw=False, display_id=None):
        assert raw and display_id is True
        self.outputs.append(dict(data))
        display = self

        class Handle:
            def update(self, data, raw=False):
                assert raw
                display.outputs[-1] = dict(data)
                display.updates += 1

        return Handle()


@pytest.fixture
def shown(monkeypatch):
    import IPython.display

    fake = FakeDisplay()
    monkeypatch.setattr(IPython.display, "display", fake)
    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    return fake


def test_outside_a_kernel_it_is_tqdm_text_on_the_given_file():
    assert not progress.in_notebook()
    out = io.StringIO()
    bar = progress_bar(total=3, desc="run", unit="step", file=out, mininterval=0)
    assert not isinstance(bar, NotebookBar)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert "run: 100%|" in out.getvalue() and "3/3" in out.getvalue()


def test_in_a_kernel_one_output_ends_at_the_final_state(shown):
    # the trainer's calls: total, initial (resumed), desc, unit; update, set_postfix, close
    bar = progress_bar(total=10, initial=4, desc="at-wrn_16_1-s0", unit="step", leave=True,
                       dynamic_ncols=True)  # fmt: skip
    assert isinstance(bar, NotebookBar)
    assert len(shown.outputs) == 1 and "4/10" in shown.outputs[0]["text/plain"]
    for _ in range(6):
        bar.update(1)
    bar.set_postfix({"loss": "0.696", "test": "93.2%"}, refresh=True)
    bar.set_description("at-wrn_16_1-s0 (done)")
    bar.close()
    assert len(shown.outputs) == 1  # redrawn in place, never a second output
    text = shown.outputs[0]["text/plain"]
    assert text.startswith("at-wrn_16_1-s0 (done): 100%|██████████| 10/10 [")
    assert text.endswith("step/s, loss=0.696, test=93.2%]")
    assert list(shown.outputs[0]) == ["text/plain"]  # no widget: renders without a kernel


def test_redraws_are_throttled(shown):
    bar = progress_bar(total=10_000, desc="fast loop", mininterval=60)
    for _ in range(10_000):
        bar.update(1)
    bar.close()
    assert shown.updates <= 2  # the close, not one message per step
    assert "10000/10000" in shown.outputs[0]["text/plain"]


def test_disabled_shows_nothing_and_leave_false_empties_its_output(shown):
    quiet = progress_bar(range(3), desc="quiet", disable=True)
    assert list(quiet) == [0, 1, 2] and shown.outputs == []
    for _ in progress_bar(range(3), desc="alignment", leave=False):
        pass
    assert shown.outputs == [{"text/plain": ""}]


def test_in_notebook_is_false_without_a_kernel(monkeypatch):
    monkeypatch.delitem(sys.modules, "IPython", raising=False)
    assert progress.in_notebook() is False
    assert "IPython" not in sys.modules  # asking did not import it


@pytest.mark.slow
def test_a_kernel_run_stores_the_final_text_and_no_widget(tmp_path):
    """Executed as papermill and nbval do (nbclient): the stored output is the final bar."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    src = (
        "import time\n"
        "from atcourse.progress import progress_bar\n"
        "bar = progress_bar(total=5, desc='demo', unit='step', mininterval=0)\n"
        "for i in range(5):\n"
        "    time.sleep(0.05)\n"
        "    bar.update(1)\n"
        "bar.set_postfix({'loss': '0.5'}, refresh=True)\n"
        "bar.close()\n"
    )
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src)])
    start = time.perf_counter()
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={
        "metadata": {"path": str(tmp_path)}}).execute()  # fmt: skip
    assert time.perf_counter() - start < 120
    outputs = nb.cells[0].outputs
    assert len(outputs) == 1, json.dumps(outputs)
    text = outputs[0]["data"]["text/plain"]
    assert text.startswith("demo: 100%|██████████| 5/5 [") and text.endswith("loss=0.5]")
    assert "application/vnd.jupyter.widget-view+json" not in outputs[0]["data"]
