"""Executing a notebook with papermill, as ``atcourse run`` and ``make notebooks`` do.

Kernels start without "Kernel is running over TCP without encryption" (encrypted where the
installed jupyter_client and zmq can), and the executed notebook's widget outputs are frozen
to what they show (:func:`atcourse.widgets.freeze_file`), so it reads the same without a
kernel. :func:`run_job` runs one notebook here (streaming its output when asked) and
:func:`run_job_in_process` in a process of its own, for ``--jobs``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .widgets import freeze_file

__all__ = ["kernel_options", "execute", "run_job", "run_job_in_process"]


def kernel_options() -> dict[str, Any]:
    """papermill's options that start kernels without "Kernel is running over TCP without
    encryption" (encrypted where this jupyter_client and zmq can, which they say)."""
    import zmq
    from jupyter_client.manager import KernelManager
    from traitlets.config import Config

    if not zmq.has("curve") or "transport_encryption" not in KernelManager.class_traits():
        return {}
    return {"config": Config({"KernelManager": {"transport_encryption": "auto"}})}


def execute(notebook: str, output: str, params: dict[str, Any], **options: Any) -> None:
    """papermill's ``execute_notebook`` in the notebook's folder, quiet kernels, and the
    executed notebook's widget outputs frozen to what they show (:func:`atcourse.widgets.
    freeze_file`), also when a cell failed."""
    import papermill as pm

    try:
        folder = str(Path(notebook).parent)
        pm.execute_notebook(notebook, output, parameters=params, cwd=folder,
                            **kernel_options(), **options)  # fmt: skip
    finally:
        if Path(output).exists():
            freeze_file(output)


def _child() -> None:
    """A ``--jobs`` process: ``python -c ... NOTEBOOK OUTPUT PARAMS_JSON``."""
    notebook, output, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    execute(notebook, output, params, progress_bar=False)


def run_job(
    notebook: str,
    output: str,
    params: dict[str, Any],
    env: dict[str, str],
    progress: bool,
    log_output: bool,
) -> tuple[str, str, float]:
    """Run one notebook with papermill; ``(status, error, seconds)``, never raises.

    ``env`` is set around the call, so the kernel papermill starts inherits it (thread
    count, runs folder). Used one job at a time, so that ``--verbose`` and ``--progress``
    can stream; ``--jobs`` runs :func:`run_job_in_process` instead.
    """
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    t0 = time.perf_counter()
    try:
        execute(notebook, output, params, progress_bar=progress, log_output=log_output)
        status, error = "ok", ""
    except Exception as exc:  # a failed notebook must not stop the others
        status = "FAILED"
        text = str(exc).strip()
        error = text.splitlines()[-1][:200] if text else repr(exc)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return status, error, time.perf_counter() - t0


def run_job_in_process(
    notebook: Path, params: dict[str, Any], env: dict[str, str], folder: Path, output: Path
) -> tuple[str, str, float]:
    """Run one notebook in a papermill process of its own; its log goes to the job folder.

    Returns ``(status, error, seconds)`` like :func:`run_job`: the error is the last line
    papermill wrote (the exception of the failing cell), the whole log is in
    ``papermill.log``.
    """
    command = [
        sys.executable, "-c", "from atcourse.execute import _child; _child()",
        str(notebook), str(output), json.dumps(params, default=list),
    ]  # fmt: skip
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True)
    except OSError as exc:
        return "FAILED", f"could not start papermill: {exc}"[:200], time.perf_counter() - t0
    seconds = time.perf_counter() - t0
    (folder / "papermill.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode == 0:
        return "ok", "", seconds
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    error = lines[-1][:200] if lines else f"papermill exited with status {proc.returncode}"
    return "FAILED", error, seconds


def main(argv: list[str] | None = None) -> int:
    """``python -m atcourse.execute NOTEBOOK... --profile lab``: re-execute notebooks in place.

    Each notebook's wall time is printed; the first failure stops (its notebook keeps the
    outputs up to the failing cell)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m atcourse.execute", description=main.__doc__)
    parser.add_argument("notebooks", nargs="+", help="notebook files, executed in place")
    parser.add_argument("--profile", default="lab", help="the profile injected (default: lab)")
    args = parser.parse_args(argv)
    for notebook in args.notebooks:
        t0 = time.perf_counter()
        try:
            execute(notebook, notebook, {"profile": args.profile})
        except Exception as exc:  # papermill has stored the outputs up to the failure
            print(f"{notebook}: FAILED after {time.perf_counter() - t0:.0f} s: {exc}",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(f"{notebook}: {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
