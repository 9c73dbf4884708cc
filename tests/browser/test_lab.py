"""The notebooks as a learner sees them: JupyterLab 4 in a real Chromium (``make browser-test``).

One JupyterLab server on 127.0.0.1 (a free port, a temporary token, the course's shipped
lab settings from ``jupyter/``) over a copy of the notebooks, driven by Playwright's Python
client through Debian's Chromium (no browser download). It checks:

1. every committed notebook, opened without running it, shows no stand-in text (``0%|``,
   ``VBox(``, "Error displaying widget") and no picture stretched past its own size;
2. notebooks 02 and 04, run in the smoke profile: their progress bars end at 100%, moving
   a control of each explorer changes its picture, and after save (through the course's
   pre-save hook), kernel shutdown and reopening, nothing says "Error displaying widget":
   the bars read 100% and each explorer shows its picture;
3. ``atcourse.progress.progress_bar`` in a notebook: one plain-text output, redrawn in
   place, whose saved form is the final bar.

Screenshots go to ``build/browser/``. Run only when ``ATCOURSE_BROWSER_TEST=1`` (the
Makefile target sets it, with ``ATCOURSE_CHROMIUM``, default ``/usr/bin/chromium``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

if os.environ.get("ATCOURSE_BROWSER_TEST") != "1":
    pytest.skip("the browser test runs with make browser-test", allow_module_level=True)

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "build" / "browser"
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHROMIUM = os.environ.get("ATCOURSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# what a reader must never see in an output
STAND_INS = re.compile(r"(^|[^0-9])0%\||\b[VH]Box\(|Error displaying widget|model not found")
# notebook -> (a dropdown of its explorer to move, the value to pick)
LIVE = {"02_activation_at.ipynb": ("reduce", "max"), "04_cam_cat_kd.ipynb": ("resolution", "4")}
USER_SETTINGS = {
    # every cell in the DOM, so that the checks see every output
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": {"windowingMode": "none"},
    # no news or update checks: the machine may have no network, and no pop-up in the shots
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {
        "fetchNews": "false", "checkForUpdates": False},
}  # fmt: skip
PROGRESS_DEMO = (
    "import time\n"
    "from atcourse.progress import progress_bar\n"
    "bar = progress_bar(total=20, desc='demo', unit='step', mininterval=0.2)\n"
    "for step in range(20):\n"
    "    time.sleep(0.15)\n"
    "    bar.update(1)\n"
    "    bar.set_postfix({'loss': f'{1 / (step + 1):.3f}'}, refresh=False)\n"
    "bar.close()\n"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """A JupyterLab server of this test: its URL, token, folder and process."""

    def __init__(self, root: Path, work: Path) -> None:
        self.root = root
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.base = f"http://127.0.0.1:{self.port}"
        settings = work / "settings"
        for rel, value in USER_SETTINGS.items():
            (settings / rel).parent.mkdir(parents=True, exist_ok=True)
            (settings / rel).write_text(json.dumps(value))
        shipped = str(REPO / "jupyter")
        env = {
            **os.environ,
            "ATCOURSE_PROFILE": "smoke",
            "ATCOURSE_RUNS": str(work / "runs"),
            "JUPYTER_CONFIG_DIR": str(work / "config"),
            "JUPYTER_RUNTIME_DIR": str(work / "runtime"),
            "IPYTHONDIR": str(work / "ipython"),
            "JUPYTER_CONFIG_PATH": os.pathsep.join(
                [shipped, *filter(None, [os.environ.get("JUPYTER_CONFIG_PATH")])]
            ),
        }
        command = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1",
            f"--port={self.port}", f"--IdentityProvider.token={self.token}",
            f"--ServerApp.root_dir={root}", "--ServerApp.allow_root=True",
            f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={work / 'ws'}",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: commands, not clicks
        ]  # fmt: skip
        if _has_curve():  # encrypted kernel sockets: no "running over TCP without encryption"
            command.append("--KernelManager.transport_encryption=auto")
        self.log = work / "server.log"
        self.proc = subprocess.Popen(
            command, cwd=root, env=env, stdout=self.log.open("wb"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                self.api("GET", "/api/status")
                break
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(
                        f"JupyterLab did not start:\n{self.log.read_text()}"
                    ) from None
                time.sleep(0.5)

    def api(self, method: str, path: str) -> object:
        request = urllib.request.Request(
            f"{self.base}{path}", method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        for kernel in self.api("GET", "/api/kernels") or []:
            self.api("DELETE", f"/api/kernels/{kernel['id']}")

    def stop(self) -> None:
        """Stop the server this test started, by its process id."""
        if self.proc.poll() is None:
            try:
                self.shutdown_kernels()
            except (urllib.error.URLError, ConnectionError):
                pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def _has_curve() -> bool:
    import zmq

    return bool(zmq.has("curve"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("lab")
    root = work / "root"
    root.mkdir()
    for path in NOTEBOOKS:
        shutil.copy2(path, root / path.name)
    nbformat = pytest.importorskip("nbformat")
    demo = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(PROGRESS_DEMO)])
    demo.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                   "language": "python"}  # fmt: skip
    nbformat.write(demo, root / "progress_demo.ipynb")
    server = Lab(root, work)
    try:
        yield server
    finally:
        server.stop()
    assert "without encryption" not in server.log.read_text(errors="replace")


@pytest.fixture(scope="module")
def page(lab, tmp_path_factory):
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium")
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM,
            headless=True, args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 900},
        )  # fmt: skip
        page = context.pages[0] if context.pages else context.new_page()
        page.goto(f"{lab.base}/lab?reset&token={lab.token}")
        page.wait_for_function("() => window.jupyterapp", timeout=120_000)
        page.evaluate("() => window.jupyterapp.restored.then(() => null)")  # commands ready
        # one notebook at a time, no side bars: what the screenshots show
        command(page, "application:set-mode", {"mode": "single-document"})
        page.evaluate("() => { window.jupyterapp.shell.collapseLeft(); "
                      "window.jupyterapp.shell.collapseRight(); }")  # fmt: skip
        try:
            yield page
        finally:
            context.close()


# ----------------------------------------------------------------------------- helpers


def command(page, name: str, args: dict | None = None):
    """Run a JupyterLab command (what a menu item or a shortcut runs)."""
    return page.evaluate(
        "([name, args]) => window.jupyterapp.commands.execute(name, args).then(() => null)",
        [name, args or {}],
    )


def open_notebook(page, name: str):
    """Close what is open (unsaved changes dropped), open ``name``, wait until every cell is
    drawn; returns its panel."""
    panel_id, cells = page.evaluate(
        """async (path) => {
            const app = window.jupyterapp;
            for (const widget of Array.from(app.shell.widgets('main'))) {
                if (widget.context) widget.context.model.dirty = false;  // no "save?" dialog
                widget.dispose();
            }
            const panel = await app.commands.execute('docmanager:open', {path});
            await panel.context.ready;
            await panel.revealed;
            return [panel.id, panel.context.model.cells.length];
        }""",
        name,
    )
    panel = page.locator(f"[id='{panel_id}']")
    panel.locator(".jp-Cell").nth(cells - 1).wait_for(state="attached", timeout=90_000)
    page.wait_for_function(
        "(id) => !document.getElementById(id).innerText.includes('Loading widget')",
        arg=panel_id, timeout=60_000,
    )  # fmt: skip
    page.wait_for_timeout(500)
    return panel


def outputs(panel) -> list[str]:
    return panel.locator(".jp-OutputArea-output").all_inner_texts()


def stretched_pictures(panel) -> list[list[float]]:
    """[natural w, shown w] of every output picture shown wider than its own pixels."""
    sizes = panel.locator(".jp-OutputArea-output img").evaluate_all(
        "els => els.filter(e => e.complete && e.naturalWidth > 0)"
        ".map(e => [e.naturalWidth, e.getBoundingClientRect().width])"
    )
    return [s for s in sizes if s[1] > s[0] + 1]


def shot(page, name: str, locator=None) -> Path:
    path = SHOTS / f"{name}.png"
    if locator is not None:
        locator.scroll_into_view_if_needed()
        page.wait_for_timeout(300)
    page.screenshot(path=str(path))
    return path


def run_all(page, panel, timeout_s: float) -> None:
    """Run every cell (Run > Run All Cells), returning when the last one has finished."""
    page.evaluate(
        """(timeout) => Promise.race([
            window.jupyterapp.commands.execute('notebook:run-all-cells'),
            new Promise((_, reject) => setTimeout(() => reject(new Error('still running')),
                                                  timeout)),
        ]).then(() => null)""",
        timeout_s * 1000,
    )
    prompts = panel.locator(".jp-CodeCell .jp-InputPrompt").all_inner_texts()
    assert prompts and not [p for p in prompts if "*" in p or not re.search(r"\[\d+\]", p)]
    errors = panel.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    tracebacks = [t for t in errors.all_inner_texts() if "Traceback" in t or "Error" in t]
    assert not tracebacks, tracebacks[0][-2000:]


def save_and_reopen(page, lab: Lab, name: str):
    """Save, stop every kernel (no kernel holds the widgets any more), reopen: the panel."""
    path = lab.root / name
    before = path.stat().st_mtime_ns
    page.evaluate(  # what File > Save runs, for the open notebook
        "() => window.jupyterapp.shell.currentWidget.context.save().then(() => null)"
    )
    deadline = time.monotonic() + 30
    while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert path.stat().st_mtime_ns != before, f"{name} was not saved"
    lab.shutdown_kernels()
    return open_notebook(page, name), json.loads(path.read_text())


# ----------------------------------------------------------------------------- tests


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_committed_notebook_reads_without_a_kernel(page, lab, path):
    panel = open_notebook(page, path.name)
    texts = outputs(panel)
    assert texts, f"{path.name} shows no outputs"
    bad = [t[:120] for t in texts if STAND_INS.search(t)]
    assert not bad, f"{path.name} shows stand-in text: {bad}"
    assert not stretched_pictures(panel), f"{path.name}: pictures stretched past their size"
    first = panel.locator(".jp-OutputArea-output", has_text=re.compile(r"100%\|")).first
    if not first.count():
        first = panel.locator(".jp-OutputArea-output img").first
    shot(page, f"{path.stem}-committed", first if first.count() else None)
    # an explorer, and notebook 06's timing panel, read as pictures
    for label, source in (("explorer", r"display\(\w+_explorer"), ("timing", r"timing\.compare")):
        cell = panel.locator(".jp-CodeCell", has_text=re.compile(source))
        if cell.count():
            picture = cell.first.locator(".jp-OutputArea-output img")
            assert picture.count() == 1, f"{path.name}: the {label} output is no picture"
            shot(page, f"{path.stem}-committed-{label}", picture)
    lab.shutdown_kernels()


@pytest.mark.parametrize("name", list(LIVE), ids=lambda n: n[:2])
def test_run_move_save_reopen(page, lab, name):
    control, value = LIVE[name]
    stem = Path(name).stem
    panel = open_notebook(page, name)
    run_all(page, panel, timeout_s=600)
    texts = outputs(panel)
    bars = [t for t in texts if re.search(r"\d+/\d+\s\[", t)]
    assert bars, "no progress bar"
    assert all("100%" in t for t in bars), bars
    assert not [t[:120] for t in texts if STAND_INS.search(t)]
    bar = panel.locator(".jp-OutputArea-output", has_text=re.compile(r"\d+/\d+\s\[")).first
    shot(page, f"{stem}-run-progress", bar)

    explorer = panel.locator(".jp-OutputArea-output .widget-vbox:has(img)").first
    picture = explorer.locator("img")
    natural, shown = picture.evaluate("e => [e.naturalWidth, e.getBoundingClientRect().width]")
    assert shown <= natural / 2 + 1, f"explorer picture {natural} px shown at {shown} px"
    shot(page, f"{stem}-explorer-before", explorer)
    before = picture.screenshot()
    src = picture.get_attribute("src")
    dropdown = explorer.locator(f".widget-dropdown:has(label:text-is('{control}')) select")
    dropdown.select_option(value)
    picture.evaluate(
        """(img, old) => new Promise((resolve, reject) => {
            const end = Date.now() + 120000;
            const check = () => img.src !== old && img.complete ? resolve(null)
                : Date.now() > end ? reject(new Error('picture not redrawn'))
                : setTimeout(check, 200);
            check();
        })""",
        src,
    )
    assert picture.screenshot() != before, "the picture did not change"
    shot(page, f"{stem}-explorer-after", explorer)

    panel, saved = save_and_reopen(page, lab, name)
    # saved through jupyter/jupyter_server_config.py: widget outputs frozen, no widget state
    assert "widgets" not in saved["metadata"]
    views = [o for c in saved["cells"] for o in c.get("outputs", [])
             if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]  # fmt: skip
    assert not views, f"{len(views)} widget outputs saved"
    texts = outputs(panel)
    assert not [t[:120] for t in texts if STAND_INS.search(t)]
    bars = [t for t in texts if re.search(r"\d+/\d+\s\[", t)]
    assert bars and all("100%" in t for t in bars), bars
    shot(
        page,
        f"{stem}-reopened-progress",
        panel.locator(".jp-OutputArea-output", has_text=re.compile(r"\d+/\d+\s\[")).first,
    )
    explorer_cell = panel.locator(".jp-CodeCell", has_text=re.compile(r"display\(\w+_explorer"))
    picture = explorer_cell.first.locator(".jp-OutputArea-output img")
    assert picture.count() == 1, "the explorer's picture is missing after reopening"
    shot(page, f"{stem}-reopened-explorer", picture)
    lab.shutdown_kernels()


def test_progress_bar_is_one_text_output_that_saves_its_final_state(page, lab):
    name = "progress_demo.ipynb"
    panel = open_notebook(page, name)
    started = time.monotonic()
    # not awaited: the bar is read while the cell runs
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
    output = panel.locator(".jp-OutputArea-output").first
    output.wait_for(timeout=60_000)
    seen = set()
    while time.monotonic() - started < 60:
        text = output.inner_text()
        seen.add(text.split("|")[0])
        if "20/20" in text:
            break
        page.wait_for_timeout(100)
    assert len(seen) >= 3, f"the bar was not redrawn in place: {seen}"
    panel.locator(".jp-InputPrompt", has_text=re.compile(r"\[1\]")).wait_for(timeout=60_000)
    assert panel.locator(".jp-OutputArea-output").count() == 1
    assert output.inner_text().startswith("demo: 100%|██████████| 20/20")
    shot(page, "progress-live", output)
    panel, saved = save_and_reopen(page, lab, name)
    stored = saved["cells"][0]["outputs"]
    assert len(stored) == 1 and list(stored[0]["data"]) == ["text/plain"]
    text = "".join(stored[0]["data"]["text/plain"])
    assert text.startswith("demo: 100%|██████████| 20/20 [") and "loss=0.050" in text
    assert panel.locator(".jp-OutputArea-output").first.inner_text() == text
    shot(page, "progress-reopened", panel.locator(".jp-OutputArea-output").first)
