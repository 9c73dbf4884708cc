"""Batch runs of the notebooks with papermill: sweeps over parameters and seeds.

``atcourse run`` (:mod:`atcourse.cli`) calls :func:`run_sweep`. Before launching anything
it expands the sweep (notebooks x grid points x seeds) and checks every ``-p`` name against
each notebook's ``parameters`` cell and every value against the parameter table
(:func:`atcourse.config.parameters`), so a typo fails in a second rather than after a run.

Sweeps. ``--seeds 0,1,2`` runs each notebook once per seed. ``-p key=v1,v2`` is a grid,
one job per value, for a parameter that takes a single value; for a parameter that takes
a tuple (declared as such, e.g. ``milestones`` and ``sweep``, or whose default in the
notebook is a list) the whole text is one value: ``-p sweep=1,2,4`` is the tuple (1, 2, 4).
Several grids multiply.

Jobs. Each job gets its own folder, ``runs/notebooks/<profile>/<job>/``, with the executed
notebook, ``job.json`` (status, error, parameters, time) and, under ``--jobs``, the log of
its papermill process (``papermill.log``). Jobs that set a training parameter with ``-p``
(a method knob or the recipe: ``beta``, ``T``, ``epochs``, ``teacher_arch``...) train into
their own runs folder, ``runs/variants/<key=value...>/``, so a run under a non-default
setting never replaces the default run of the same name (the leaderboard reads both, as
separate rows). ``--jobs N`` runs N notebooks at once, each with cores / N CPU threads; a
teacher they share is trained once (the zoo's file lock) and a run they share is trained
by one and returned to the other (``train.fit`` locks its run folder). ``--resume`` skips
the jobs whose ``job.json`` says they finished with the same parameters and the same
notebook code.

Devices. On a machine with several GPUs, ``--jobs N`` gives each notebook running at once a
GPU of its own (``CUDA_VISIBLE_DEVICES``, so its ``device="auto"`` is that GPU), from every
visible GPU or from ``--devices 0,1,...``; with more jobs than GPUs they take the GPUs in
turn (:func:`device_slots`). A job takes a free GPU when it starts and gives it back when it
ends; the printed line and ``job.json`` say which GPU each job ran on.
"""

from __future__ import annotations

import ast
import concurrent.futures as futures
import contextlib
import datetime as _dt
import hashlib
import json
import os
import queue
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

from . import paths
from .config import ConfigError, parameters
from .execute import run_job, run_job_in_process
from .leaderboard import leaderboard, smoke_notice, to_markdown
from .records import load_records

__all__ = [
    "SweepError", "notebook_parameters", "parse_assignment", "parse_grid", "find_notebooks",
    "Job", "expand_jobs", "run_sweep", "cpu_count", "parse_devices", "visible_gpus",
    "device_slots",
]  # fmt: skip


class SweepError(Exception):
    """A mistake in a sweep's notebooks or parameters: printed without a traceback."""


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """The literals of a notebook's cell tagged ``parameters`` (name -> value)."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SweepError(f"cannot read notebook {path}: {exc}") from exc
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code" and "parameters" in cell.get("metadata", {}).get(
            "tags", []
        ):
            source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            values: dict[str, Any] = {}
            for node in ast.parse(source).body:
                if isinstance(node, ast.Assign):
                    for target in node.targets:
                        if isinstance(target, ast.Name):
                            values[target.id] = ast.literal_eval(node.value)
            return values
    raise SweepError(f"{path.name} has no cell tagged 'parameters', so it cannot be parameterized")


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, Python literal, or the plain string)."""
    if "=" not in text:
        raise SweepError(f"-p expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key, value


def _literal_or_text(source: str, node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError:  # a bare word such as code or cifar10: the text itself
        return ast.get_source_segment(source, node)


def parse_grid(text: str, *, takes_tuple: bool = False) -> tuple[str, list[Any]]:
    """``key=v1,v2,...`` -> (key, [values]): the values of a grid, one job each.

    For a parameter that takes one value, commas (or a list, ``[v1, v2]``) separate the
    grid's values; each is a Python literal or, failing that, the plain text
    (``at_mode=code,paper``). For a parameter that takes a tuple (``takes_tuple``), the
    whole text is one value and a single number becomes a 1-tuple: ``sweep=1,2,4`` ->
    ``[(1, 2, 4)]``; there is no grid over tuple parameters (run once per value).
    """
    if "=" not in text:
        raise SweepError(f"-p expects key=value, got {text!r}")
    key, raw = (part.strip() for part in text.split("=", 1))
    if not key or not raw:
        raise SweepError(f"-p expects key=value with both parts, got {text!r}")
    try:
        node = ast.parse(raw, mode="eval").body
    except SyntaxError:  # e.g. folder:/path: one plain string
        return key, [(raw,) if takes_tuple else raw]
    items = node.elts if isinstance(node, (ast.Tuple, ast.List)) else [node]
    values = [_literal_or_text(raw, item) for item in items]
    if takes_tuple:
        return key, [tuple(values)]
    if not values:
        raise SweepError(f"-p {key}={raw} gives no value")
    return key, values


def find_notebooks(names: Sequence[str]) -> list[Path]:
    """Notebook paths from names, numbers ('02') or paths; all course notebooks when empty."""
    root = paths.repo_root()
    nb_dir = (root / "notebooks") if root is not None else Path.cwd() / "notebooks"
    available = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        if not available:
            raise SweepError(f"no notebooks found in {nb_dir}")
        return available
    found = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.exists():
            found.append(path)
            continue
        matches = [p for p in available if p.stem == name or p.stem.startswith(name)]
        if len(matches) != 1:
            choices = ", ".join(p.stem for p in available)
            raise SweepError(f"notebook {name!r} not found (or ambiguous); choose from: {choices}")
        found.append(matches[0])
    return found


def _takes_tuple(key: str, declared: Sequence[dict[str, Any]]) -> bool:
    """Whether ``key`` takes a tuple: its declared type, else the notebooks' defaults."""
    table = parameters()
    if key in table:
        types = table[key].type if isinstance(table[key].type, tuple) else (table[key].type,)
        return tuple in types or list in types
    return any(isinstance(d.get(key), (list, tuple)) for d in declared)


def _check_parameters(nb: Path, params: dict[str, Any], grid: Sequence[str] = ()) -> None:
    declared = notebook_parameters(nb)
    for key, value in params.items():
        if key not in declared:
            raise SweepError(
                f"{nb.name} has no parameter {key!r}; its parameters are: "
                f"{', '.join(sorted(declared))}"
            )
        table = parameters()
        if key in table:
            try:
                table[key].check(key, value)
            except ConfigError as exc:
                if key in grid:
                    hint = f" (-p {key}=a,b,... runs one job per value)"
                elif _takes_tuple(key, [declared]):
                    hint = (
                        f" ({key} takes a tuple: -p {key}=a,b,... is one value; there is "
                        f"no grid over tuple parameters, run once per value)"
                    )
                else:
                    hint = ""
                raise SweepError(f"{exc}{hint}") from exc


#: Parameters that never send a job's runs to a runs folder of its own: they are part of
#: the run names (profile, dataset, seed), do not change what is learned (device), or
#: change only runs that keep no record (sweep). Notebook knobs that are not in the
#: parameter table (``skip``, ``run_flip``) choose what a notebook shows, not how a run
#: trains. Precision is part of a run's setting: runs in another precision go to their own
#: folder.
_SHARED_RUN_KEYS = ("profile", "dataset", "device", "seed", "sweep")


@dataclass
class Job:
    """One notebook execution of a sweep.

    Attributes:
        notebook: the source notebook.
        params: the parameters papermill injects.
        name: the job's name, also its folder: ``<stem>[-key=value...][-s<seed>]``.
        variant: the runs subfolder for its training runs (``key=value...`` of its ``-p``
            values), or None for the shared runs folder.
    """

    notebook: Path
    params: dict[str, Any]
    name: str
    variant: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    gpu: str | None = None  # the GPU it ran on (its CUDA_VISIBLE_DEVICES), or None


def _show(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, (list, tuple)):
        text = ",".join(_show(v) for v in value)
    else:
        text = str(value)
    return "".join(c if c.isalnum() or c in "-_.,+" else "_" for c in text)


def expand_jobs(
    notebooks: Sequence[Path],
    assignments: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    base: dict[str, Any] | None = None,
) -> list[Job]:
    """The jobs of a sweep: every notebook x every grid point x every seed, in that order.

    Args:
        notebooks: notebook paths.
        assignments: the ``-p`` texts (``key=value`` or ``key=v1,v2``; see
            :func:`parse_grid` for which parameters take a grid).
        seeds: one job per seed (None: the notebooks' own seed).
        base: fixed parameters (``--profile``, ``--dataset``, ``--device``).

    Raises:
        SweepError: an unknown parameter or a bad value, before anything runs; a key given
            twice; a seed given with ``-p`` (use ``--seeds``).
    """
    base = dict(base or {})
    declared = [notebook_parameters(nb) for nb in notebooks]
    grids: dict[str, list[Any]] = {}
    for text in assignments:
        key = text.split("=", 1)[0].strip()
        if key == "seed":
            raise SweepError("set seeds with --seeds 0,1,2, not -p seed=...")
        if key in grids or key in base:
            raise SweepError(f"parameter {key!r} is given twice (in -p or as an option)")
        key, values = parse_grid(text, takes_tuple=_takes_tuple(key, declared))
        grids[key] = values
    grid_keys = [k for k, v in grids.items() if len(v) > 1]
    table = parameters()
    own_runs = [k for k in grids if k in table and k not in _SHARED_RUN_KEYS]
    jobs = []
    for nb in notebooks:
        for point in product(*grids.values()):
            for seed in [None] if seeds is None else seeds:
                # Lists, not tuples: papermill writes a tuple into the notebook as the text
                # of one ("'(1, 2, 4)'"); a list arrives as a list, whichever way it runs.
                params = {
                    k: list(v) if isinstance(v, tuple) else v
                    for k, v in {**base, **dict(zip(grids, point))}.items()
                }
                if seed is not None:
                    params["seed"] = seed
                _check_parameters(nb, params, grid_keys)  # every job checked before any runs
                name = nb.stem + "".join(f"-{k}={_show(params[k])}" for k in grid_keys)
                name += f"-s{seed}" if seed is not None else ""
                variant = "-".join(f"{k}={_show(params[k])}" for k in own_runs) or None
                jobs.append(Job(nb, params, name, variant))
    return jobs


def _notebook_code_hash(nb: Path) -> str:
    """A hash of a notebook's code cells (outputs excluded): what its results depend on."""
    cells = json.loads(nb.read_text()).get("cells", [])
    code = [
        "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
        for c in cells
        if c.get("cell_type") == "code"
    ]
    return hashlib.sha1("\n\0".join(code).encode()).hexdigest()[:12]


def _finished(folder: Path, job: Job, code_hash: str) -> bool:
    try:
        done = json.loads((folder / "job.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    same_params = json.dumps(done.get("params"), sort_keys=True, default=list) == json.dumps(
        job.params, sort_keys=True, default=list
    )
    return (
        done.get("status") == "ok"
        and same_params
        and done.get("code") == code_hash
        and (folder / job.notebook.name).exists()
    )


def cpu_count() -> int:
    """The CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def parse_devices(text: str) -> list[str]:
    """``--devices 0,1,3`` -> ``["0", "1", "3"]``; ``"none"`` -> ``[]`` (no assignment).

    GPU numbers as nvidia-smi shows them (or ``GPU-...``/``MIG-...`` UUIDs): they become the
    jobs' ``CUDA_VISIBLE_DEVICES``, which replaces, not narrows, the caller's.
    """
    if text.strip().lower() == "none":
        return []
    devices = [d.strip() for d in text.split(",") if d.strip()]
    bad = [d for d in devices if not (d.isdigit() or d.startswith(("GPU-", "MIG-")))]
    if not devices or bad:
        raise SweepError(
            f"--devices expects GPU numbers separated by commas (e.g. 0,1,2,3) or 'none', "
            f"got {text!r}"
        )
    if len(set(devices)) != len(devices):
        raise SweepError(f"--devices lists a GPU twice: {text!r}")
    return devices


def visible_gpus(environ: dict[str, str] | None = None, count: int | None = None) -> list[str]:
    """The GPUs jobs may be given: the entries of ``CUDA_VISIBLE_DEVICES`` when it is set,
    else ``0..count-1`` (``count``: default, the GPUs torch sees)."""
    environ = dict(os.environ) if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    if count is None:
        import torch  # the parent process only counts; the notebooks' kernels use the GPUs

        count = torch.cuda.device_count()
    return [str(i) for i in range(count)]


def device_slots(devices: Sequence[str], jobs: int) -> list[str]:
    """The GPU of each of the ``jobs`` notebooks that run at once: the devices in turn.

    ``jobs`` <= GPUs: one GPU each (the first ``jobs`` GPUs). More jobs than GPUs: they
    share, in turn (``["0", "1"]``, 3 jobs -> ``["0", "1", "0"]``), which suits models too
    small to fill a GPU. No devices: no slots (the jobs keep the caller's environment).
    """
    if jobs < 1:
        raise SweepError(f"--jobs expects a positive number of processes, got {jobs}")
    return [devices[i % len(devices)] for i in range(jobs)] if devices else []


def run_sweep(
    notebooks: Sequence[Path],
    assignments: Sequence[str] = (),
    seeds: Sequence[int] | None = None,
    base: dict[str, Any] | None = None,
    *,
    jobs: int = 1,
    threads: int | None = None,
    resume: bool = False,
    output: str | Path | None = None,
    progress: bool = False,
    verbose: bool = False,
    devices: str | Sequence[str] | None = None,
) -> int:
    """Run every job of a sweep (:func:`expand_jobs`) with papermill; the number that failed.

    Args:
        notebooks, assignments, seeds, base: as in :func:`expand_jobs`.
        jobs: notebooks run at once, each in a papermill process of its own.
        threads: CPU threads per notebook (default: cores / jobs when ``jobs > 1``).
        resume: skip the jobs that finished earlier with the same parameters and code.
        output: folder for the job folders (default ``runs/notebooks/<profile>/``).
        progress, verbose: papermill's cell progress and the notebooks' output (one job at
            a time only).
        devices: the GPUs for the jobs (``"0,1"``, a list, or ``"none"``); each job running
            at once takes one (:func:`device_slots`). Default: every visible GPU when
            ``jobs > 1`` and there are several, and the sweep is not on ``device="cpu"``.

    A failed notebook does not stop the others; the summary table and the leaderboard of
    the profiles run are printed at the end.
    """
    if jobs < 1:
        raise SweepError(f"--jobs expects a positive number of processes, got {jobs}")
    planned_jobs = expand_jobs(notebooks, assignments, seeds, base)
    if isinstance(devices, str):
        gpus = parse_devices(devices)
    elif devices is not None:
        gpus = list(devices)
    elif jobs > 1 and str((base or {}).get("device", "auto")) in ("auto", "cuda"):
        gpus = visible_gpus()
        gpus = gpus if len(gpus) > 1 else []  # one GPU: the jobs share it as they are
    else:
        gpus = []
    free: queue.Queue[str] = queue.Queue()
    for gpu in device_slots(gpus, jobs):
        free.put(gpu)
    threads = threads or (max(1, cpu_count() // jobs) if jobs > 1 else None)
    runs_root = paths.runs_root()
    out_root = Path(output) if output else runs_root / "notebooks"
    planned = []  # (job, folder, output notebook, code hash, skip)
    for job in planned_jobs:
        profile = job.params.get("profile", "default")
        folder = (out_root if output else out_root / str(profile)) / job.name
        if threads:
            job.env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        if job.variant:
            job.env["ATCOURSE_RUNS"] = str(runs_root / "variants" / job.variant)
        code = _notebook_code_hash(job.notebook)
        skip = resume and _finished(folder, job, code)
        planned.append((job, folder, folder / job.notebook.name, code, skip))

    summary: dict[str, tuple[str, float, str]] = {}

    def finish(job: Job, folder: Path, code: str, result: tuple[str, str, float]) -> None:
        status, error, secs = result
        summary[job.name] = (status, secs, error)
        record = {
            "notebook": job.notebook.name, "params": job.params, "status": status,
            "error": error, "seconds": round(secs, 1), "code": code, "gpu": job.gpu, "env": job.env,
            "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }  # fmt: skip
        (folder / "job.json").write_text(json.dumps(record, indent=1, default=list))
        where = f" on GPU {job.gpu}" if job.gpu is not None else ""
        print(f"[atcourse run] {status:<6} {job.name} ({secs:.0f} s{where}) {error}".rstrip(),
              flush=True)  # fmt: skip

    @contextlib.contextmanager
    def on_free_gpu(job: Job):
        """Hold a free GPU for the job while it runs (none when there are no slots)."""
        if not gpus:
            yield
            return
        job.gpu = free.get()  # never waits: a slot per job that runs at once
        job.env["CUDA_VISIBLE_DEVICES"] = job.gpu
        try:
            yield
        finally:
            free.put(job.gpu)

    def execute_in_process(job: Job, folder: Path, out: Path) -> tuple[str, str, float]:
        with on_free_gpu(job):
            return run_job_in_process(job.notebook, job.params, job.env, folder, out)

    todo = []
    for job, folder, out, code, skip in planned:
        if skip:
            summary[job.name] = ("skipped", 0.0, "finished earlier (--resume)")
            print(f"[atcourse run] skip   {job.name}: finished earlier (--resume)", flush=True)
        else:
            paths.make_dirs(folder)
            todo.append((job, folder, out, code))
    how = f"{jobs} at a time" if jobs > 1 else "one at a time"
    print(
        f"[atcourse run] {len(todo)} notebook job(s) to run, {how}"
        + (f", {threads} CPU thread(s) each" if threads else "")
        + (f", on GPU(s) {','.join(dict.fromkeys(device_slots(gpus, jobs)))}" if gpus else ""),
        flush=True,
    )
    t0 = time.perf_counter()
    if jobs == 1:
        for job, folder, out, code in todo:
            with on_free_gpu(job):
                print(f"[atcourse run] start  {job.name} {job.params or ''} -> {out}", flush=True)
                result = run_job(
                    str(job.notebook), str(out), job.params, job.env, progress, verbose
                )
            finish(job, folder, code, result)
    else:
        # Threads that each wait on a papermill process: the environment (threads, runs
        # folder) goes to that process alone, and nothing here imports torch again.
        with futures.ThreadPoolExecutor(max_workers=jobs) as pool:
            running = {
                pool.submit(execute_in_process, job, folder, out): (job, folder, code)
                for job, folder, out, code in todo
            }
            try:
                for fut in futures.as_completed(running):
                    job, folder, code = running[fut]
                    finish(job, folder, code, fut.result())
            except KeyboardInterrupt:
                pool.shutdown(wait=False, cancel_futures=True)
                raise
    wall = time.perf_counter() - t0

    names = [job.name for job, *_ in planned]
    width = max(len("notebook job"), *(len(n) for n in names))
    print()
    print(f"{'notebook job':<{width}}  status   seconds")
    for name in names:
        status, secs, error = summary[name]
        print(f"{name:<{width}}  {status:<7}  {secs:7.1f}  {error}".rstrip())
    print(f"\nwall time {wall:.0f} s; executed notebooks are in {out_root}")
    _print_leaderboard({job.params.get("profile") for job in planned_jobs})
    failed = sum(s[0] == "FAILED" for s in summary.values())
    if failed:
        print(f"{failed} of {len(summary)} notebook job(s) failed", file=sys.stderr)
    return failed


def _print_leaderboard(profiles: set[Any]) -> None:
    """The leaderboard of the complete run records of the profiles just run."""
    chosen = [
        r
        for r in load_records()
        if None in profiles or (r.get("params") or {}).get("profile") in profiles
    ]
    rows = leaderboard(chosen)
    if rows:
        print(f"\nleaderboard of the run records in {paths.runs_root()}:\n")
        notice = smoke_notice(rows)
        if notice:  # said first: a newcomer reads the table as results otherwise
            print(notice + "\n")
        print(to_markdown(rows))
