"""The leaderboard: mean and spread over seeds, one row per variant, and the results page.

:func:`leaderboard` groups run records (:mod:`atcourse.records`) by *variant* (label,
method, hyperparameters, task, teacher, student, profile, recipe), never by method name
alone, and gives the mean and the sample standard deviation over seeds; :func:`to_markdown`
and :func:`to_csv` export it. :func:`compare_to_reference` gives each row's gain over the
student alone with a verdict against the noise between seeds, :func:`paper_gain` the gain a
paper reports for the method, and :func:`smoke_notice` the warning a table of smoke runs
needs. :func:`render_section` and :func:`update_page` regenerate the marked tables of
``docs/results.md`` from the records (``atcourse results --page docs/results.md``), beside
the published numbers of :mod:`atcourse.anchors`.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .anchors import anchors, anchors_markdown
from .config import PROFILES, RECIPE_KEYS
from .records import load_records

__all__ = [
    "leaderboard", "to_markdown", "to_csv", "compare_to_reference", "paper_gain",
    "smoke_notice", "LAB_COMMAND", "describe_machines", "render_section", "update_page",
    "CSV_COLUMNS",
]  # fmt: skip


#: What separates leaderboard rows besides the recipe (the seed does not).
_ROW_KEYS = (*RECIPE_KEYS, "test_size")
GROUP_KEYS = ("label", "method", "dataset", "teacher", "student", "profile")


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _variant(rec: Mapping[str, Any]) -> tuple:
    params = rec.get("params") or {}
    recipe = {k: params.get(k) for k in _ROW_KEYS if k != "dataset"}
    if recipe.get("optimizer") == "sgd":
        recipe["optimizer"] = None
    label = rec.get("label") or rec.get("method")
    task = rec.get("task") or params.get("dataset")
    return (
        label, rec.get("method"), task, rec.get("teacher"), rec.get("student"),
        params.get("profile"), _canon(rec.get("hparams") or {}), _canon(recipe),
    )  # fmt: skip


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def leaderboard(
    records: Iterable[dict] | None = None, *, metric: str = "test_acc"
) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of ``metric`` over seeds, one row per variant.

    A variant is a label (stored in each record), method, hyperparameters, task, teacher,
    student, profile and training recipe: gradient AT with a teacher and in flip mode, or
    one method at two values of beta, are separate rows even though the method name is
    the same. Where two rows would show the same label, the hyperparameters that tell them
    apart are added to it (``at (beta=100)``). Two records of one variant and one seed
    (the same run in two runs folders) count once: the later one.

    Each row: ``label, method, dataset, teacher, student, profile, hparams, n, seeds,
    values`` (``metric`` per seed, in the order of ``seeds``), ``mean, std`` (sample std,
    n - 1; 0 for one seed), ``epoch_time_s`` (mean seconds of
    training per epoch), ``alignment`` and ``alignment_std`` (None where not recorded),
    ``alignment_n``, ``metric`` and ``records`` (their paths). Sorted by profile, data
    set, then ``mean`` from best to worst.
    """
    records = load_records() if records is None else list(records)
    groups: dict[tuple, dict[Any, dict]] = defaultdict(dict)
    for rec in records:
        if metric not in (rec.get("final") or {}):
            continue
        seed = (rec.get("params") or {}).get("seed")
        kept = groups[_variant(rec)].get(seed)
        if kept is None or str(rec.get("updated", "")) >= str(kept.get("updated", "")):
            groups[_variant(rec)][seed] = rec
    rows = []
    for key, by_seed in groups.items():
        recs = [by_seed[s] for s in sorted(by_seed, key=lambda s: (s is None, s))]
        row: dict[str, Any] = dict(zip(GROUP_KEYS, key[:6]))
        row["hparams"] = json.loads(key[6])
        row["recipe"] = json.loads(key[7])
        values = [r["final"][metric] for r in recs]
        row["metric"] = metric
        row["n"] = len(values)
        row["seeds"] = [r.get("params", {}).get("seed") for r in recs]
        row["values"] = list(values)  # one per seed, in the order of ``seeds``
        row["mean"], row["std"] = _mean_std(values)
        times = [r["final"]["epoch_time_s"] for r in recs if r["final"].get("epoch_time_s")]
        row["epoch_time_s"] = statistics.fmean(times) if times else math.nan
        aligned = [r["final"]["alignment"] for r in recs if "alignment" in r["final"]]
        row["alignment_n"] = len(aligned)
        row["alignment"], row["alignment_std"] = _mean_std(aligned) if aligned else (None, None)
        for key in ("pointing", "auc", "teacher_similarity"):
            values = [r["final"][f"alignment_{key}"] for r in recs
                      if f"alignment_{key}" in r["final"]]  # fmt: skip
            row[key], row[f"{key}_std"] = _mean_std(values) if values else (None, None)
        row["records"] = [r.get("path") for r in recs]
        rows.append(row)
    _disambiguate(rows)
    rows.sort(key=lambda r: (str(r["profile"]), str(r["dataset"]), -r["mean"], r["label"]))
    return rows


def _disambiguate(rows: list[dict[str, Any]]) -> None:
    """Append what tells apart rows that would otherwise show the same label."""
    clashes: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        clashes[tuple(row[k] for k in GROUP_KEYS)].append(row)
    for same in clashes.values():
        if len(same) < 2:
            continue
        settings = [{**r["recipe"], **r["hparams"]} for r in same]
        keys = sorted({k for s in settings for k in s})
        differ = [k for k in keys if len({_canon(s.get(k)) for s in settings}) > 1]
        for row, s in zip(same, settings):
            shown = ", ".join(f"{k}={_short(s.get(k))}" for k in differ)
            row["label"] = f"{row['label']} ({shown})"


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_short(v) for v in value) + "]"
    return str(value)


def _pct(value: float | None, scale: float, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:.{digits}f}"


def to_markdown(rows: Sequence[dict[str, Any]], *, percent: bool = True) -> str:
    """A leaderboard as a Markdown table (accuracy and alignment in % unless ``percent``).

    Columns: run label, method, teacher -> student, data set, profile, seeds (n), test
    accuracy mean ± sample std, seconds of training per epoch, share of attention on the
    object (mean ± std over the seeds where it was measured).
    """
    scale = 100.0 if percent else 1.0
    unit = " %" if percent else ""
    head = (
        f"| run | method | teacher → student | data | profile | seeds | test acc{unit} "
        f"| s/epoch | on object{unit} |"
    )
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        acc = f"{_pct(r['mean'], scale)} ± {_pct(r['std'], scale)}"
        if r.get("alignment") is not None:
            align = f"{_pct(r['alignment'], scale, 1)} ± {_pct(r['alignment_std'], scale, 1)}"
        else:
            align = "-"
        pair = f"{r['teacher'] or '-'} → {r['student']}"
        secs = "-" if math.isnan(r["epoch_time_s"]) else f"{r['epoch_time_s']:.1f}"
        lines.append(
            f"| {r['label']} | {r['method']} | {pair} | {r['dataset']} | {r['profile']} | "
            f"{r['n']} | {acc} | {secs} | {align} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- verdicts

#: The rows a comparison sets side by side share these (the student alone of the same task).
_SETTING_KEYS = ("dataset", "profile", "student")


def compare_to_reference(
    rows: Sequence[dict[str, Any]], *, reference: str = "baseline", z: float = 2.0
) -> list[dict[str, Any]]:
    """Each row's gain over the reference row of its setting, and whether it beats the noise.

    The gain is *paired* by seed: a row ``a`` and the reference ``b`` (by default the student
    alone) of the same data set, profile and student that were both run with seed ``s``
    share the student's initialisation and batch order, so the comparison takes the
    per-seed differences ``d_s = a_s - b_s`` over the seeds both rows have. ``gain`` is
    their mean, its standard error ``se = s_d / sqrt(n)`` (``s_d`` the sample std of the
    differences, ``n`` the number of shared seeds); the verdict is ``"better"`` when
    ``gain > z * se``, ``"worse"`` when ``gain < -z * se``, ``"within the noise"``
    otherwise, and ``"cannot tell"`` when fewer than two seeds are shared (no spread to
    measure the noise by). Pairing removes what a seed does to both runs alike (a lucky
    initialisation), so it tells apart gains that the rows' own spreads would hide.
    ``z = 2`` is about a 95% two-sided interval for a normal gain. Without a shared seed,
    ``gain`` is the difference of the rows' means.

    Args:
        rows: :func:`leaderboard` rows.
        reference: the label of the reference row.
        z: how many standard errors a gain must exceed.

    Returns:
        One dict per row that has a reference in its setting (the reference itself and rows
        of another student, such as the teacher, are left out), in the order of ``rows``:
        ``label, method, dataset, profile, student, teacher, n, n_reference, seeds`` (the
        shared seeds), ``n_paired, mean, reference_mean, gain, se, threshold`` (``z * se``;
        None where the verdict cannot be told) and ``verdict``; accuracies as fractions,
        like the rows.
    """
    if z <= 0:
        raise ValueError(f"z must be positive (standard errors a gain must exceed), got {z}")
    references = {tuple(r[k] for k in _SETTING_KEYS): r for r in rows if r["label"] == reference}
    out = []
    for row in rows:
        ref = references.get(tuple(row[k] for k in _SETTING_KEYS))
        if ref is None or row is ref:
            continue
        ref_by_seed = {s: v for s, v in zip(ref["seeds"], ref["values"]) if s is not None}
        shared = [s for s in row["seeds"] if s is not None and s in ref_by_seed]
        by_seed = dict(zip(row["seeds"], row["values"]))
        diffs = [by_seed[s] - ref_by_seed[s] for s in shared]
        gain = statistics.fmean(diffs) if diffs else row["mean"] - ref["mean"]
        if len(diffs) < 2:
            se = threshold = None
            verdict = "cannot tell"
        else:
            se = statistics.stdev(diffs) / math.sqrt(len(diffs))
            threshold = z * se
            verdict = (
                "better" if gain > threshold else "worse" if gain < -threshold
                else "within the noise"
            )  # fmt: skip
        out.append({
            "label": row["label"], "method": row["method"], "dataset": row["dataset"],
            "profile": row["profile"], "student": row["student"], "teacher": row["teacher"],
            "n": row["n"], "n_reference": ref["n"], "seeds": shared, "n_paired": len(diffs),
            "mean": row["mean"], "reference_mean": ref["mean"],
            "gain": gain, "se": se, "threshold": threshold, "verdict": verdict,
        })  # fmt: skip
    return out


def _family(arch: str | None) -> str:
    match = re.match(r"[a-z]+", (arch or "").lower())
    return match.group(0) if match else ""


def _pair(a: Any) -> tuple:
    return (a.dataset, a.metric, a.teacher, a.student)


def paper_gain(
    method: str, *, student: str | None = None, teacher: str | None = None
) -> dict[str, Any] | None:
    """The gain over the student alone a paper reports for ``method`` (:mod:`atcourse.anchors`).

    Of the anchors of ``method`` that have a student-alone number for the same data set and
    pair (from the same source where it has one), the one closest to ours: the same teacher
    and student first, then the same student, then a student and teacher of the same
    families (``wrn``, ``resnet``...), then a student of the same family, then the first
    listed.

    Returns:
        None where no paper reports the method beside its student alone; else ``gain`` (in
        accuracy points, top-1 or 100 - error), ``value``, ``baseline`` and
        ``teacher_value`` (accuracies, %; the teacher's None where not published),
        ``source``, ``dataset``, ``teacher``, ``student``.
    """
    pool = anchors()
    candidates = []
    for index, a in enumerate(pool):
        if a.method != method or method in ("baseline", "teacher"):
            continue
        alone = [b for b in pool if b.method == "baseline" and _pair(b) == _pair(a)]
        if not alone:
            continue
        base = next((b for b in alone if b.source == a.source), alone[0])
        rank = (
            a.student == student and a.teacher == teacher,
            a.student == student,
            _family(a.student) == _family(student) and _family(a.teacher) == _family(teacher),
            _family(a.student) == _family(student),
            -index,
        )
        candidates.append((rank, a, base))
    if not candidates:
        return None
    _, a, base = max(candidates, key=lambda c: c[0])
    same_pair = [t for t in pool if t.method == "teacher" and _pair(t) == _pair(a)]
    return {
        "gain": a.accuracy - base.accuracy, "value": a.accuracy, "baseline": base.accuracy,
        "teacher_value": same_pair[0].accuracy if same_pair else None,
        "source": a.source, "dataset": a.dataset, "teacher": a.teacher, "student": a.student,
    }  # fmt: skip


#: The command whose runs a leaderboard is meant to show, said under a table of smoke runs.
LAB_COMMAND = "atcourse run 07_leaderboard --profile lab --seeds 0,1,2"


def smoke_notice(rows: Iterable[Mapping[str, Any]]) -> str | None:
    """What to say above a table that holds runs of the ``smoke`` profile (None if none).

    Smoke runs train for seconds on a few hundred images: their accuracies sit near chance
    and show that the mechanics work, nothing about the methods.
    """
    if not any(r.get("profile") == "smoke" for r in rows):
        return None
    return (
        "These are smoke-profile runs, trained for seconds on a few hundred images: they test "
        "that the mechanics work, and their accuracies say nothing about the methods. For results, "
        f"run the lab profile: `{LAB_COMMAND}` (then `atcourse results --profile lab`)."
    )


CSV_COLUMNS = (
    "label", "method", "dataset", "teacher", "student", "profile", "hparams", "n", "seeds",
    "metric", "mean", "std", "epoch_time_s", "alignment", "alignment_std", "alignment_n",
    "pointing", "pointing_std", "auc", "auc_std", "teacher_similarity", "teacher_similarity_std",
)  # fmt: skip


def to_csv(rows: Sequence[dict[str, Any]], path: str | Path | None = None) -> str:
    """A leaderboard as CSV (fractions, not %; ``seeds`` joined by ';'), written if ``path``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        values = []
        for col in CSV_COLUMNS:
            v = r.get(col)
            if col == "hparams":
                v = _canon(v or {})
            elif col == "seeds":
                v = ";".join(str(s) for s in v)
            elif v is None or (isinstance(v, float) and math.isnan(v)):
                v = ""
            values.append(v)
        writer.writerow(values)
    text = buffer.getvalue()
    if path is not None:
        Path(path).write_text(text)
    return text


# --------------------------------------------------------------------------- results page

_BEGIN = re.compile(r"<!-- atcourse:(leaderboard|anchors)([^>]*)-->")
_END = "<!-- atcourse:end -->"


def describe_machines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The distinct machines records ran on, as text: device or CPU, threads, torch."""
    seen = []
    for rec in records:
        machine = rec.get("machine") or {}
        if rec.get("device_name") not in (None, "cpu", "unknown"):
            where = str(rec["device_name"])
        elif machine:
            where = f"{machine.get('cpu')}, {machine.get('cores')} cores"
        else:
            where = "unknown machine"
        threads = rec.get("threads")
        text = (
            f"{where}; {threads} thread{'s' if threads != 1 else ''}; torch {rec.get('torch')}"
            if threads
            else f"{where}; torch {rec.get('torch')}"
        )
        if text not in seen:
            seen.append(text)
    return seen


def render_section(
    records: Iterable[dict], *, profile: str, dataset: str, notebook: str = "07_leaderboard"
) -> str | None:
    """The Markdown of one measured leaderboard: table, command, machine, provenance.

    None when no complete record matches ``profile`` and ``dataset``.
    """
    chosen = [
        r
        for r in records
        if (r.get("params") or {}).get("profile") == profile
        and (r.get("params") or {}).get("dataset") == dataset
    ]
    rows = leaderboard(chosen)
    if not rows:
        return None
    seeds = sorted({s for r in rows for s in r["seeds"] if s is not None})
    command = f"atcourse run {notebook} --profile {profile} --seeds {','.join(map(str, seeds))}"
    if PROFILES.get(profile, {}).get("dataset") != dataset:
        command += f" -p dataset={dataset}"
    versions = sorted({str(r.get("code_version")) for r in chosen if r.get("code_version")})
    dates = sorted(str(r.get("updated", ""))[:10] for r in chosen if r.get("updated")) or ["?"]
    lines = [
        to_markdown(rows),
        "",
        f"Reproduce: `{command}`, then `atcourse results --page docs/results.md`.",
        "",
        "Machine: " + " | ".join(describe_machines(chosen)) + ".",
        "",
        f"From {len(chosen)} run records ({dates[0]} to {dates[-1]}); code "
        f"{', '.join(versions) or 'unknown'}. Mean ± sample std over seeds; s/epoch is "
        f"training time only.",
    ]
    return "\n".join(lines)


def update_page(path: str | Path, records: Iterable[dict] | None = None) -> list[tuple[str, bool]]:
    """Regenerate the marked tables of a Markdown page in place (``docs/results.md``).

    A table sits between ``<!-- atcourse:leaderboard profile=lab dataset=shapes -->``
    (or ``<!-- atcourse:anchors -->``) and ``<!-- atcourse:end -->``. Leaderboard
    sections with no matching records are left as they are, so regenerating on a machine
    that has only some of the runs never erases the others.

    Returns:
        ``(marker, updated)`` per marked section.
    """
    path = Path(path)
    text = path.read_text()
    records = load_records() if records is None else list(records)
    report: list[tuple[str, bool]] = []
    out, pos = [], 0
    for match in _BEGIN.finditer(text):
        end = text.find(_END, match.end())
        if end < 0:
            raise ValueError(f"{path}: marker {match.group(0)!r} has no {_END!r} after it")
        if match.start() < pos:
            continue
        kind, args = match.group(1), dict(re.findall(r"(\w+)=(\S+)", match.group(2)))
        if kind == "anchors":
            body = anchors_markdown(anchors(dataset=args.get("dataset")))
        else:
            missing = {"profile", "dataset"} - set(args)
            if missing:
                raise ValueError(
                    f"{path}: {match.group(0)!r} needs {', '.join(sorted(missing))}=..."
                )
            body = render_section(records, profile=args["profile"], dataset=args["dataset"])
        out.append(text[pos : match.end()])
        if body is None:
            out.append(text[match.end() : end])
        else:
            out.append("\n" + body.rstrip() + "\n")
        report.append((match.group(0), body is not None))
        out.append(_END)
        pos = end + len(_END)
    out.append(text[pos:])
    path.write_text("".join(out))
    return report
