"""The ``atcourse`` command: run notebooks, train a model, check the environment.

    atcourse run [NOTEBOOK ...] --profile smoke --seeds 0,1 -p beta=1000
    atcourse train --arch wrn_16_1 --profile lab
    atcourse student                     # exercise editions into build/student/
    atcourse bench --models wrn_16_1     # images/s and method overheads
    atcourse doctor

``atcourse run`` executes notebooks with papermill. Before launching anything it checks
every ``-p`` name against the notebook's ``parameters`` cell and every value against
:data:`atcourse.config.PARAMS`, so a typo fails in a second rather than after a run.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import paths
from .config import PARAMS, PROFILES, ConfigError

__all__ = ["main", "notebook_parameters", "parse_assignment", "find_notebooks"]


class CLIError(Exception):
    """A command-line mistake: printed without a traceback, exit status 2."""


def notebook_parameters(path: str | Path) -> dict[str, Any]:
    """The literals of a notebook's cell tagged ``parameters`` (name -> value)."""
    path = Path(path)
    try:
        nb = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CLIError(f"cannot read notebook {path}: {exc}") from exc
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
    raise CLIError(f"{path.name} has no cell tagged 'parameters', so it cannot be parameterized")


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` -> (key, Python literal, or the plain string)."""
    if "=" not in text:
        raise CLIError(f"-p expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key, value


def find_notebooks(names: Sequence[str]) -> list[Path]:
    """Notebook paths from names, numbers ('02') or paths; all course notebooks when empty."""
    root = paths.repo_root()
    nb_dir = (root / "notebooks") if root is not None else Path.cwd() / "notebooks"
    available = sorted(nb_dir.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        if not available:
            raise CLIError(f"no notebooks found in {nb_dir}")
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
            raise CLIError(f"notebook {name!r} not found (or ambiguous); choose from: {choices}")
        found.append(matches[0])
    return found


def _check_parameters(nb: Path, params: dict[str, Any]) -> None:
    declared = notebook_parameters(nb)
    for key, value in params.items():
        if key not in declared:
            raise CLIError(
                f"{nb.name} has no parameter {key!r}; its parameters are: "
                f"{', '.join(sorted(declared))}"
            )
        if key in PARAMS:
            try:
                PARAMS[key].check(key, value)
            except ConfigError as exc:
                raise CLIError(str(exc)) from exc


def _cmd_run(args: argparse.Namespace) -> int:
    import papermill as pm

    notebooks = find_notebooks(args.notebooks)
    base: dict[str, Any] = dict(parse_assignment(p) for p in args.param)
    for key in ("profile", "dataset", "device"):
        if getattr(args, key) is not None:
            base[key] = getattr(args, key)
    seeds = [None] if args.seeds is None else _parse_seeds(args.seeds)
    jobs = []
    for nb in notebooks:
        for seed in seeds:
            params = dict(base)
            if seed is not None:
                params["seed"] = seed
            _check_parameters(nb, params)  # every notebook checked before any runs
            jobs.append((nb, params))

    profile = base.get("profile", "default")
    out_dir = Path(args.output) if args.output else paths.runs_root() / "notebooks" / profile
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = []
    for nb, params in jobs:
        suffix = f"-s{params['seed']}" if "seed" in params else ""
        out = out_dir / f"{nb.stem}{suffix}.ipynb"
        print(f"[atcourse run] {nb.name} {params or ''} -> {out}", flush=True)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb),
                str(out),
                parameters=params,
                cwd=str(nb.parent),
                progress_bar=args.progress,
                log_output=args.verbose,
            )
            status, error = "ok", ""
        except Exception as exc:  # a failed notebook must not stop the others
            status = "FAILED"
            error = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else repr(exc)
        summary.append((nb.stem + suffix, status, time.perf_counter() - t0, error, out))

    width = max(len(s[0]) for s in summary)
    print()
    print(f"{'notebook':<{width}}  status  seconds")
    for stem, status, secs, error, _ in summary:
        print(f"{stem:<{width}}  {status:<6}  {secs:7.1f}  {error}")
    print(f"\nexecuted notebooks are in {out_dir}")
    failed = sum(s[1] != "ok" for s in summary)
    if failed:
        print(f"{failed} of {len(summary)} notebook(s) failed", file=sys.stderr)
    return 1 if failed else 0


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise CLIError(f"--seeds expects integers separated by commas, got {text!r}") from exc
    if not seeds or any(s < 0 for s in seeds):
        raise CLIError(f"--seeds expects non-negative integers, got {text!r}")
    return seeds


def _cmd_train(args: argparse.Namespace) -> int:
    from . import data, train, zoo
    from .config import configure
    from .distill import METHODS, build_method, hparams_from_config
    from .models import build

    if args.method not in METHODS:
        raise CLIError(
            f"unknown method {args.method!r}: choose one of {', '.join(sorted(METHODS))}"
        )
    overrides = dict(parse_assignment(p) for p in args.param)
    try:
        cfg = configure(
            args.profile,
            arch=args.arch,
            dataset=args.dataset,
            device=args.device,
            seed=args.seed,
            **overrides,
        )
    except ConfigError as exc:
        raise CLIError(str(exc)) from exc
    train_set, test_set = data.load_splits(cfg)
    model = build(cfg.arch, num_classes=train_set.num_classes)
    teacher = None
    if METHODS[args.method].needs_teacher:
        teacher = zoo.teacher(args.teacher, cfg=cfg, data=(train_set, test_set))
    method = build_method(args.method, model, teacher, **hparams_from_config(args.method, cfg))
    result = train.fit(method, cfg, train_set, test_set, resume=args.resume, name=args.name)
    final = result.final
    print(
        f"test accuracy {final.get('test_acc', float('nan')):.2%} after {final['epochs']} "
        f"epochs, {final['images_per_s']:.0f} images/s; record in {result.run_dir}"
    )
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .runtime import env_report

    try:
        env_report(args.device)
    except (RuntimeError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    problems = []
    root = paths.data_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        problems.append(f"data root {root} is not writable ({exc}); set ATCOURSE_DATA")
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        if "python3" not in KernelSpecManager().find_kernel_specs():
            problems.append("no 'python3' Jupyter kernel: pip install ipykernel")
    except ImportError:
        problems.append("jupyter_client is missing: pip install jupyterlab papermill")
    for problem in problems:
        print(f"problem: {problem}")
    print("all checks passed" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def _cmd_student(args: argparse.Namespace) -> int:
    from .student import run_cli

    root = paths.repo_root() or Path.cwd()
    src = args.source or str(root / "notebooks")
    out = args.output or str(root / "build" / "student")
    return run_cli(src, out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atcourse", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="execute notebooks with papermill and summarize")
    run.add_argument(
        "notebooks", nargs="*", help="names like 00 or 02_activation_at (default: all)"
    )
    run.add_argument("--profile", choices=sorted(PROFILES), help="smoke, lab or full")
    run.add_argument("--dataset", help="shapes, cifar10, cifar100 or folder:<path>")
    run.add_argument("--device", help="auto, cpu, cuda or mps")
    run.add_argument("--seeds", help="comma-separated seeds, each a separate run (e.g. 0,1,2)")
    run.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a notebook parameter (repeatable)",
    )
    run.add_argument("--output", help="folder for executed notebooks (default runs/notebooks/...)")
    run.add_argument("--progress", action="store_true", help="show papermill's cell progress")
    run.add_argument("--verbose", action="store_true", help="stream the notebooks' output")
    run.set_defaults(func=_cmd_run)

    tr = sub.add_parser("train", help="train one student (alone or distilled) through the loop")
    tr.add_argument("--arch", default="wrn_16_1", help="student architecture (default wrn_16_1)")
    tr.add_argument(
        "--method",
        default="baseline",
        help="baseline (alone), kd, at, at+kd, ... (default baseline)",
    )
    tr.add_argument(
        "--teacher",
        default="wrn_16_2",
        help="teacher architecture, from the zoo (default wrn_16_2)",
    )
    tr.add_argument("--profile", default="lab", choices=sorted(PROFILES))
    tr.add_argument("--dataset", default=None, help="default: the profile's")
    tr.add_argument("--device", default=None, help="auto, cpu, cuda or mps")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--name", default=None, help="run name (folder under runs/)")
    tr.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    tr.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter, e.g. -p epochs=3 -p beta=1000 (repeatable)",
    )
    tr.set_defaults(func=_cmd_train)

    st = sub.add_parser("student", help="write student editions (solutions stubbed, no outputs)")
    st.add_argument("--source", help="folder of course notebooks (default notebooks/)")
    st.add_argument("--output", help="where editions go (default build/student/)")
    st.set_defaults(func=_cmd_student)

    from . import bench

    be = sub.add_parser("bench", help="measure training speed per model and method")
    bench.add_arguments(be)
    be.set_defaults(func=bench.run_from_args)

    doc = sub.add_parser("doctor", help="report versions, device and data; check the setup")
    doc.add_argument("--device", default="auto")
    doc.set_defaults(func=_cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"atcourse {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
