"""The ``atcourse`` command: run notebooks, train a model, tabulate results, check the setup.

    atcourse run [NOTEBOOK ...] --profile smoke --seeds 0,1 -p beta=1e2,1e3 --jobs 2
    atcourse train --arch wrn_16_1 --profile lab
    torchrun --standalone --nproc_per_node=2 -m atcourse train --profile lab   # one run, 2 GPUs
    atcourse results --profile lab       # the leaderboard of the run records
    atcourse student                     # exercise editions into build/student/
    atcourse bench --models wrn_16_1     # images/s and method overheads
    atcourse doctor

``atcourse run`` executes notebooks with papermill (:mod:`atcourse.sweep` says how sweeps,
jobs and ``--resume`` work); ``atcourse train`` trains one model through the loop without a
notebook; the others read what those wrote.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import anchors, bench, data, distributed, leaderboard, models, paths, records, zoo
from .config import PROFILES, ConfigError, configure
from .distill import METHODS, build_method, hparams_from_config, unused_knobs
from .runtime import env_report, resolve_device
from .student import run_cli as student_editions
from .sweep import SweepError, find_notebooks, parse_assignment, run_sweep
from .train import RunExistsError, fit

__all__ = ["main", "build_parser", "CLIError"]


class CLIError(Exception):
    """A command-line mistake: printed without a traceback, exit status 2."""


def _cmd_run(args: argparse.Namespace) -> int:
    base: dict[str, Any] = {
        key: getattr(args, key)
        for key in ("profile", "dataset", "device")
        if getattr(args, key) is not None
    }
    seeds = None if args.seeds is None else _parse_seeds(args.seeds)
    failed = run_sweep(
        find_notebooks(args.notebooks), args.param, seeds, base, jobs=args.jobs,
        threads=args.threads, resume=args.resume, output=args.output, progress=args.progress,
        verbose=args.verbose, devices=args.devices,
    )  # fmt: skip
    return 1 if failed else 0


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise CLIError(f"--seeds expects integers separated by commas, got {text!r}") from exc
    if not seeds or any(s < 0 for s in seeds):
        raise CLIError(f"--seeds expects non-negative integers, got {text!r}")
    if len(set(seeds)) != len(seeds):
        raise CLIError(f"--seeds lists a seed twice: {text!r}")
    return seeds


def _cmd_results(args: argparse.Namespace) -> int:
    if args.anchors:
        items = anchors.anchors(dataset=args.dataset)
        text = anchors.anchors_csv(items) if args.csv else anchors.anchors_markdown(items)
    else:
        found = records.load_records(args.runs)
        if args.page:
            page = Path(args.page)
            if not page.is_file():
                raise CLIError(f"--page {page}: no such file")
            try:
                report = leaderboard.update_page(page, found)
            except ValueError as exc:
                raise CLIError(str(exc)) from exc
            for marker, updated in report:
                print(f"{'updated' if updated else 'kept (no matching records)'}: {marker}")
            return 0
        found = [
            r
            for r in found
            if (args.profile is None or (r.get("params") or {}).get("profile") == args.profile)
            and (args.dataset is None or (r.get("params") or {}).get("dataset") == args.dataset)
        ]
        rows = leaderboard.leaderboard(found)
        if not rows:
            where = args.runs or paths.runs_root()
            print(f"no complete run records in {where} for this selection", file=sys.stderr)
            return 1
        text = leaderboard.to_csv(rows) if args.csv else leaderboard.to_markdown(rows)
    if args.output:
        Path(args.output).write_text(text if text.endswith("\n") else text + "\n")
        print(f"written to {args.output}")
    else:
        print(text)
    return 0


def _given_params(texts: list[str]) -> dict[str, Any]:
    """The ``-p KEY=VALUE`` values of a command, each key given once."""
    given: dict[str, Any] = {}
    for text in texts:
        try:
            key, value = parse_assignment(text)
        except SweepError as exc:
            raise CLIError(str(exc)) from exc
        if key in given:
            raise CLIError(f"-p {key}=... is given twice")
        given[key] = value
    return given


def _train_config(args: argparse.Namespace) -> Any:
    """The configuration of ``atcourse train``: options and ``-p`` values, each given once."""
    given = _given_params(args.param)
    options = {"arch": args.arch, "teacher_arch": args.teacher, "dataset": args.dataset,
               "device": args.device, "seed": args.seed}  # fmt: skip
    flags = {"arch": "--arch", "teacher_arch": "--teacher", "dataset": "--dataset",
             "device": "--device", "seed": "--seed"}  # fmt: skip
    for key, value in options.items():
        if key in given:
            raise CLIError(f"-p {key}=... duplicates the option {flags[key]}: give it once")
        given[key] = value
    if args.method not in METHODS:
        raise CLIError(
            f"unknown method {args.method!r}: choose one of {', '.join(sorted(METHODS))}"
        )
    unused = unused_knobs(args.method, given)
    if unused:
        own = ", ".join(METHODS[args.method].knobs) or "none"
        raise CLIError(
            f"method {args.method!r} does not use {', '.join(unused)} (its knobs: {own}); "
            "drop those -p values"
        )
    try:
        cfg = configure(args.profile, verbose=distributed.is_main(), **given)  # once, by rank 0
        if cfg.arch is None:  # the profile's student
            cfg = cfg.replace(arch=cfg.student_arch)
        for key, flag in (("arch", "--arch"), ("teacher_arch", "--teacher")):
            models.check_name(cfg[key], what=flag)
        hparams = hparams_from_config(args.method, cfg)
    except (ConfigError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    return cfg, hparams


def _cmd_train(args: argparse.Namespace) -> int:
    cfg, hparams = _train_config(args)  # every mistake is found before any data is loaded
    if args.tune and not cfg.val_size:
        raise CLIError(
            "--tune scores a choice on the validation split, and val_size=0 leaves none: "
            "drop -p val_size=0 (or give it a size), or train without --tune"
        )
    # Under torchrun every process runs this command: they load the data alike, share one
    # teacher (zoo) and train one run (fit); rank 0 alone writes and prints.
    distributed.init()
    world = distributed.world_size()
    if world > 1 and cfg.batch_size % world:
        raise CLIError(
            f"batch_size={cfg.batch_size} does not split over {world} processes: give a "
            f"multiple of {world} (-p batch_size=...), the global batch of every step"
        )
    if args.sync_bn:
        try:
            on_cuda = resolve_device(cfg.device).type == "cuda"
        except (RuntimeError, ValueError) as exc:
            raise CLIError(str(exc)) from exc
        if not on_cuda:
            raise CLIError("--sync-bn needs CUDA (SyncBatchNorm runs on GPUs); drop it on the CPU")
    train_set, val_set, test_set = data.load_splits(cfg)
    student = models.build(cfg.arch, num_classes=train_set.num_classes, seed=cfg.seed)
    teacher = None
    if METHODS[args.method].needs_teacher:
        teacher = zoo.teacher(cfg.teacher_arch, cfg=cfg, data=(train_set, val_set, test_set))
    method = build_method(args.method, student, teacher, **hparams)
    label, name = None, args.name
    if args.tune:  # one point of a choice made on validation: named by the values it tries
        knobs = METHODS[args.method].knobs
        given = [k for k in sorted(knobs) if k in cfg and cfg.source(k) == "given"]
        tried = "-".join(f"{k}{cfg[k]:g}" if isinstance(cfg[k], float) else f"{k}{cfg[k]}"
                         for k in given)  # fmt: skip
        label = f"{args.method}-val" + (f"-{tried}" if tried else "")
    try:
        # A run of the same setting already there is continued or returned (two identical
        # commands started together: one trains, the other waits and returns its result).
        result = fit(method, cfg, train_set, None if args.tune else test_set, val_set=val_set,
                     label=label, name=name, resume="auto", replace=args.replace,
                     sync_bn=args.sync_bn)  # fmt: skip
    except RunExistsError as exc:
        raise CLIError(str(exc)) from exc
    final = result.final
    if not distributed.is_main():
        return 0
    where = f" over {distributed.world_size()} processes" if distributed.world_size() > 1 else ""
    score = (f"validation accuracy {result.history[-1]['val_acc']:.2%}" if args.tune
             else f"test accuracy {final.get('test_acc', float('nan')):.2%}")  # fmt: skip
    print(
        f"{score} after {final['epochs']} epochs{where}, {final['images_per_s']:.0f} "
        f"images/s; record in {result.run_dir}"
    )
    return 0


def _cmd_teacher(args: argparse.Namespace) -> int:
    given = _given_params(args.param)
    classes = None
    if args.classes:
        try:
            classes = [int(c) for c in args.classes.split(",")]
        except ValueError:
            raise CLIError(
                f"--classes expects class indices like 0,1,2, got {args.classes!r}"
            ) from None
    try:
        cfg = configure(args.profile, verbose=False, teacher_arch=args.arch, **given)
        models.check_name(cfg.teacher_arch, what="--arch")
    except (ConfigError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    if "pretrain_scale" in given:  # pre-trained on more images than a student gets (06)
        cfg = zoo.pretrain_config(cfg)
    model = zoo.teacher(cfg.teacher_arch, cfg=cfg, classes=classes, retrain=args.retrain)
    info = model.zoo_info
    where = "shipped" if info.get("shipped") else ("loaded" if info["cached"] else "trained")
    print(f"{where}: {Path(info['path']).name}, test accuracy {info['final']['test_acc']:.2%}")
    if args.ship:
        command = (
            " ".join(["atcourse teacher", *sys.argv[2:]])
            if sys.argv[1:2] == ["teacher"]
            else f"atcourse teacher --arch {cfg.teacher_arch} --profile {args.profile}"
        )
        print(f"shipped as {zoo.ship(model, command)}")
    return 0


def _writable_dir(what: str, root: Path, variable: str) -> str | None:
    """None when ``root`` is (or can be made) a writable folder, else the problem."""
    if root.exists() and not root.is_dir():
        return f"the {what} {root} is a file, not a folder; set {variable} to a folder"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        return f"the {what} {root} is not writable ({exc.strerror or exc}); set {variable}"
    return None


def _cmd_doctor(args: argparse.Namespace) -> int:
    try:
        env_report(args.device)
    except (RuntimeError, ValueError) as exc:
        raise CLIError(str(exc)) from exc
    problems = [
        p
        for p in (
            _writable_dir("data folder", paths.data_root(), "ATCOURSE_DATA"),
            _writable_dir("runs folder", paths.runs_root(), "ATCOURSE_RUNS"),
        )
        if p
    ]
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
    root = paths.repo_root() or Path.cwd()
    src = args.source or str(root / "notebooks")
    out = args.output or str(root / "build" / "student")
    return student_editions(src, out)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="atcourse", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="execute notebooks with papermill, sweeps included")
    run.add_argument(
        "notebooks", nargs="*", help="names like 00 or 02_activation_at (default: all)"
    )
    run.add_argument("--profile", choices=sorted(PROFILES), help="smoke, lab or full")
    run.add_argument("--dataset", help="shapes, cifar10, cifar100 or folder:<path>")
    run.add_argument("--device", help="auto, cpu, cuda or mps")
    run.add_argument("--seeds", help="comma-separated seeds, each a separate job (e.g. 0,1,2)")
    run.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set a notebook parameter (repeatable). KEY=V1,V2 is a grid (one job per "
        "value) for a parameter that takes one value; for a tuple parameter (milestones, "
        "sweep) the whole list is one value",
    )
    run.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="notebooks run at once, in separate processes (default 1)",
    )
    run.add_argument(
        "--devices",
        default=None,
        help="GPUs for the jobs, as nvidia-smi numbers them (e.g. 0,1,2,3): each notebook "
        "running at once gets its own (CUDA_VISIBLE_DEVICES), in turn when --jobs exceeds "
        "them; default with --jobs > 1: every visible GPU; 'none' leaves the jobs alone",
    )
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per notebook (default: cores / jobs when --jobs > 1)",
    )
    run.add_argument(
        "--resume",
        action="store_true",
        help="skip jobs that finished earlier with the same parameters and notebook code",
    )
    run.add_argument(
        "--output", help="folder for the job folders (default runs/notebooks/<profile>/)"
    )
    run.add_argument("--progress", action="store_true", help="show papermill's cell progress")
    run.add_argument("--verbose", action="store_true", help="stream the notebooks' output")
    run.set_defaults(func=_cmd_run)

    res = sub.add_parser("results", help="the leaderboard of the run records, or the anchors")
    res.add_argument("--runs", default=None, help="runs folder to read (default runs/)")
    res.add_argument("--profile", choices=sorted(PROFILES), help="only this profile")
    res.add_argument("--dataset", default=None, help="only this data set")
    res.add_argument("--csv", action="store_true", help="CSV instead of Markdown")
    res.add_argument("--anchors", action="store_true", help="the published numbers instead")
    res.add_argument("--output", default=None, help="write to this file instead of printing")
    res.add_argument(
        "--page",
        default=None,
        help="regenerate the marked tables of this Markdown page in place (e.g. docs/results.md)",
    )
    res.set_defaults(func=_cmd_results)

    tr = sub.add_parser("train", help="train one student (alone or distilled) through the loop")
    tr.add_argument(
        "--arch", default=None, help="student architecture (default: the profile's student_arch)"
    )
    tr.add_argument(
        "--method",
        default="baseline",
        help="baseline (alone), kd, at, at+kd, ... (default baseline)",
    )
    tr.add_argument(
        "--teacher",
        default=None,
        help="teacher architecture, from the zoo (default: the profile's teacher_arch)",
    )
    tr.add_argument("--profile", default="lab", choices=sorted(PROFILES))
    tr.add_argument("--dataset", default=None, help="default: the profile's")
    tr.add_argument("--device", default=None, help="auto, cpu, cuda or mps")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--name", default=None, help="run name (folder under runs/)")
    tr.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run of the same setting, or return it when it has "
        "finished (what happens anyway; a run of another setting is refused)",
    )
    tr.add_argument(
        "--tune",
        action="store_true",
        help="a run that informs a choice: scored on the validation split only, the test "
        "split never read; named after the method's -p values (e.g. kd-val-T2-...)",
    )
    tr.add_argument(
        "--replace", action="store_true", help="train a new run over the one already there"
    )
    tr.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun: batch-norm statistics over the whole batch (SyncBatchNorm, "
        "CUDA only) instead of each process's share",
    )
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

    be = sub.add_parser("bench", help="measure training speed per model and method")
    bench.add_arguments(be)
    be.set_defaults(func=bench.run_from_args)

    te = sub.add_parser(
        "teacher",
        help="load or train the zoo's teacher for a setting; --ship adds it to the package",
    )
    te.add_argument(
        "--arch", default=None, help="teacher architecture (default: the profile's teacher_arch)"
    )
    te.add_argument("--profile", default="lab", choices=sorted(PROFILES))
    te.add_argument("--classes", default=None, help="train on these classes only, e.g. 0,1,2,3,4")
    te.add_argument("--retrain", action="store_true", help="train it again, ignoring any copy")
    te.add_argument(
        "--ship", action="store_true", help="copy it into atcourse/teachers/ with its recipe"
    )
    te.add_argument(
        "-p", "--param", action="append", default=[], metavar="KEY=VALUE",
        help="set a parameter of the teacher's recipe, e.g. -p teacher_epochs=30 (repeatable)",
    )  # fmt: skip
    te.set_defaults(func=_cmd_teacher)

    doc = sub.add_parser("doctor", help="report versions, device and data; check the setup")
    doc.add_argument("--device", default="auto")
    doc.set_defaults(func=_cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (CLIError, SweepError) as exc:
        print(f"atcourse {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
