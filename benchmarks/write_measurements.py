"""Write docs/measurements.md from a results folder: current numbers only, nothing typed by hand.

    python benchmarks/write_measurements.py [--results results] [--log FILE] [--out docs/measurements.md]

Reads, each when present (a missing input gives its section one line naming the target that
makes it):

* the default run (`make run`): Snakemake's log (``--log``; default the newest
  ``.snakemake/log/*.snakemake.log`` next to ``--results`` that ran jobs) for the job count and
  wall time, ``<results>/benchmarks/<rule>/**.tsv`` and the ``JOB_TIMING`` line of each job log
  (:func:`teachfit.logs.job_times`) for the time per rule, and ``<results>/tables/*.csv``;
* ``<results>/benchmarks/bench_summary.json`` (`make bench`, ``benchmarks/run_all.py``);
* ``<results>/gate/quality.csv`` (`make gate-quality`);
* ``<results>/fidelity/fidelity.json`` (`make fidelity`).

It also copies the README's figure (:data:`README_FIGURE`: the IFS curve of gemma-3-270m tuned on
SmolLM2's greedy answers) from ``<results>/figures/`` to ``docs/img/`` when the run made it.
`make measurements` runs it on ``results/``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import shutil
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from teachfit.logs import job_times

TITLE = "# Measurements"
NOT_MEASURED = "not measured: run `{target}`"

#: marks teacher_ranking.csv: shown by :func:`ranking_section`
RANKING = ("ranking",)
#: (CSV under <results>/tables, heading, columns to show first; None = every column)
STUDY_TABLES: dict[str, list[tuple[str, str, Sequence[str] | None]]] = {
    "Teacher study": [
        ("teacher_data_metrics.csv", "Data metrics per generator and student (`teacher_data_metrics.csv`)",
         ("generator", "base", "n", "reward", "length", "ppl_base", "ifd_base", "ppl_ref", "ifd_ref", "car")),
        ("teacher_performance.csv", "Performance after SFT (`teacher_performance.csv`)", None),
        ("teacher_metric_correlations.csv", "Spearman ρ of each metric with performance "
         "(`teacher_metric_correlations.csv`)", ()),
        ("teacher_ranking.csv", "Ranking without fine-tuning (`teacher_ranking.csv`)", RANKING),
    ],
    "Evolver study": [
        ("evolved_instruction_stats.csv", "Validity gate (`evolved_instruction_stats.csv`)",
         ("seedset", "scenario", "evolver", "round", "n_replies", "n_dropped", "n_valid", "n_kept", "status",
          "length_words", "difficulty", "diversity_nn_distance")),
        ("evolver_top1_stats.csv", "Output space: top-1 probability over every sampled token and over the first "
         "5 greedy tokens (`first_*`, the paper's statistic) (`evolver_top1_stats.csv`)",
         ("evolver", "scenario", "round", "n_tokens", "mean", "median", "share_ge_0.9", "first_n_tokens",
          "first_mean", "first_median", "first_share_ge_0.9")),
        ("evolver_comparison.csv", "Evolver comparison (`evolver_comparison.csv`)", None),
        ("selection_comparison.csv", "Data selection (`selection_comparison.csv`)", None),
    ],
    "IFS study": [
        ("tone_classifier.csv", "Tone classifier (`tone_classifier.csv`)", None),
        ("ifs_models.csv", "IFS of the models (`ifs_models.csv`)", None),
        ("ifs_checkpoints.csv", "IFS of the SFT checkpoints (`ifs_checkpoints.csv`)", None),
        ("early_stopping.csv", "Early stopping at the IFS plateau (`early_stopping.csv`)", None),
        ("objecqa_judge.csv", "ObjecQA judge (`objecqa_judge.csv`)", None),
    ],
}
MAX_COLUMNS = 12
#: (figure under <results>/figures, its copy next to the measurements page) embedded in README.md
README_FIGURE = ("ifs/teacher/smol_greedy/full/gemma270m.png", "img/ifs_curve.png")
_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_STEPS = re.compile(r"^(\d+) of (\d+) steps \((\d+)%\) done$")


# --------------------------------------------------------------------------- formatting

def fmt(v: Any) -> str:
    """A table cell: whole numbers as integers, others to 3 decimals below 10, 1 decimal below 100,
    whole above; NaN and
    None as "–"."""
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        a = abs(v)
        if a >= 1 and v.is_integer():
            return f"{int(v):,}"
        if a >= 100:
            return f"{v:,.0f}"
        if a >= 10:
            return f"{v:.1f}"
        if a == 0 or a >= 1e-3:
            return f"{v:.3f}"
        return f"{v:.1e}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub markdown table of ``rows`` (dicts) over ``columns``."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _with_intervals(rows: list[dict[str, Any]], columns: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """Fold ``x``, ``x_lo``, ``x_hi`` into one cell "x (lo–hi)"."""
    folded = [c for c in columns if f"{c}_lo" in columns and f"{c}_hi" in columns]
    if not folded:
        return rows, columns
    out = []
    for r in rows:
        r = dict(r)
        for c in folded:
            if isinstance(r.get(c), float) and not math.isnan(r[c]):
                r[c] = f"{fmt(r[c])} ({fmt(r[f'{c}_lo'])}–{fmt(r[f'{c}_hi'])})"
        out.append(r)
    drop = {f"{c}_{s}" for c in folded for s in ("lo", "hi")}
    return out, [c for c in columns if c not in drop]


def csv_section(path: Path, prefer: Sequence[str] | None) -> str:
    """One CSV as a markdown table: the ``prefer`` columns that exist (None: every column),
    intervals folded, p-value columns left out, at most :data:`MAX_COLUMNS` columns."""
    import polars as pl

    if not path.read_text(encoding="utf-8").strip():
        return "No rows (the CSV is empty)."
    df = pl.read_csv(path, infer_schema_length=None)
    if df.height == 0:
        return f"No rows (the CSV has only its header: {', '.join(df.columns)})."
    cols = [c for c in df.columns if not c.endswith("_p")]
    if prefer:
        picked = [c for c in prefer if c in cols]
        cols = picked or cols
    rows, cols = _with_intervals(df.to_dicts(), cols)
    note = ""
    if len(cols) > MAX_COLUMNS:
        note = f"\n\n{len(cols) - MAX_COLUMNS} more column(s) in `{path.name}`."
        cols = cols[:MAX_COLUMNS]
    return md_table(rows, cols) + note


def ranking_section(path: Path) -> str:
    """``teacher_ranking.csv`` in two tables: per generator (performance, each measure's rank, the
    mixed teacher's margin over the best single one with its 95% interval), then per measure its
    Spearman ρ with the measured ranking and the 95% bootstrap interval, and the best measure."""
    import polars as pl

    df = pl.read_csv(path, infer_schema_length=None)
    if df.height == 0 or "performance" not in df.columns:
        return csv_section(path, None)
    measures = [c[: -len("_rho")] for c in df.columns if c.endswith("_rho")]
    out = []
    for base, part in df.group_by("base", maintain_order=True):
        cols = ["generator", "performance", "performance_rank", *[f"{m}_rank" for m in measures],
                "margin_vs_best_single", "margin_low", "margin_high", "beats_every_single"]
        cols = [c for c in cols if c in part.columns]
        out += [f"Student {base[0]}: ranks (1 = predicted best) and the mixed teacher's margin.", "",
                md_table(part.sort("performance_rank").to_dicts(), cols), ""]
        first = part.row(0, named=True)
        rows = [{"measure": m, "ρ": first[f"{m}_rho"], "95% low": first.get(f"{m}_rho_low"),
                 "95% high": first.get(f"{m}_rho_high"), "teachers": first.get("rho_n")} for m in measures]
        out += [f"Student {base[0]}: Spearman ρ of each measure's ranking with the fine-tuned ranking "
                f"(95% bootstrap interval over generators); best measure: {first.get('best_measure') or '–'}.", "",
                md_table(rows, ["measure", "ρ", "95% low", "95% high", "teachers"]), ""]
    return "\n".join(out).rstrip()


def correlation_section(path: Path) -> str:
    """``teacher_metric_correlations.csv`` turned round: one row per metric, Spearman ρ (and its
    p-value) per student, the ``average`` row last."""
    import polars as pl

    df = pl.read_csv(path, infer_schema_length=None)
    if df.height == 0 or "base" not in df.columns:
        return csv_section(path, None)
    metrics = [c[: -len("_spearman")] for c in df.columns if c.endswith("_spearman")]
    groups = df.to_dicts()
    cols = ["metric"]
    for g in groups:
        cols.append(f"ρ {g['base']}")
        if f"{metrics[0]}_spearman_p" in g and g["base"] != "average":
            cols.append(f"p {g['base']}")
    rows = []
    for m in metrics:
        row: dict[str, Any] = {"metric": m}
        for g in groups:
            row[f"ρ {g['base']}"] = g.get(f"{m}_spearman")
            row[f"p {g['base']}"] = g.get(f"{m}_spearman_p")
        rows.append(row)
    n = ", ".join(f"{g['base']} n = {g['n']}" for g in groups if "n" in g)
    return md_table(rows, cols) + (f"\n\n({n}; for `average`, n counts students.)" if n else "")


# --------------------------------------------------------------------------- inputs

def snakemake_log(results: Path, log: Path | None = None) -> Path | None:
    """``log``, or the newest ``.snakemake/log/*.snakemake.log`` beside ``results`` that ran jobs."""
    if log is not None:
        return log
    logs = sorted((results.resolve().parent / ".snakemake" / "log").glob("*.snakemake.log"), reverse=True)
    for p in logs:
        if any(_STEPS.match(line.strip()) for line in p.read_text(errors="replace").splitlines()):
            return p
    return None


def run_summary(log: Path) -> dict[str, Any]:
    """From a Snakemake log: ``jobs_done``, ``jobs_total``, ``complete`` (100% reached),
    ``wall_s`` (first to last ``[timestamp]`` line), ``cores`` and ``snakemake``
    (version), each None when the log does not say."""
    out: dict[str, Any] = {"jobs_done": None, "jobs_total": None, "complete": False, "wall_s": None,
                           "cores": None, "snakemake": None, "started": None}
    stamps = []
    for line in log.read_text(errors="replace").splitlines():
        s = line.strip()
        if m := _STAMP.match(s):
            stamps.append(datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y"))
        elif m := _STEPS.match(s):
            out["jobs_done"], out["jobs_total"] = int(m.group(1)), int(m.group(2))
            out["complete"] = m.group(3) == "100"
        elif s.startswith("Provided cores:"):
            out["cores"] = int(s.split(":")[1])
        elif s.startswith("Snakemake version:"):
            out["snakemake"] = s.split(":", 1)[1].strip()
    if len(stamps) >= 2:
        out["wall_s"] = (stamps[-1] - stamps[0]).total_seconds()
        out["started"] = stamps[0].strftime("%Y-%m-%d %H:%M")
    return out


def _seconds(v: float | None) -> str:
    """Seconds in a time table: whole seconds from 10 s, one decimal below."""
    if v is None:
        return "–"
    return f"{v:,.0f}" if abs(v) >= 10 else f"{v:.1f}"


def _minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {int(round(seconds % 60))} s"


# --------------------------------------------------------------------------- sections

def default_run_section(results: Path, log: Path | None) -> list[str]:
    out = ["## The default run (`make run`, `config/config.yaml`)", ""]
    log = snakemake_log(results, log)
    if log is None or not log.is_file():
        out += [NOT_MEASURED.format(target="make run") + " (no Snakemake log found)", ""]
    else:
        s = run_summary(log)
        status = "complete" if s["complete"] else f"incomplete: {s['jobs_done']} of {s['jobs_total']} jobs"
        wall = _minutes(s["wall_s"]) if s["wall_s"] is not None else "–"
        out += [f"- Jobs: **{s['jobs_total']}** ({status}); wall time **{wall}** "
                f"(first to last job, Snakemake's log); cores: {s['cores']}; Snakemake {s['snakemake']}; "
                f"started {s['started']}.", ""]
    try:
        jt = job_times(results)
    except FileNotFoundError:
        return out + [NOT_MEASURED.format(target="make run") + " (no `results/benchmarks/`)", ""]
    rows = jt.to_dicts()
    total = rows[-1]
    out += [f"Where the time went (`benchmarks/job_overhead.py`, `teachfit.logs.job_times`): "
            f"{total['jobs']} jobs, {_seconds(total['wall_s'])} s of job time summed. Seconds per rule, "
            "summed over its jobs: startup = interpreter, Snakemake preamble and imports before the "
            "function; model loading; compute = the function without model loading (lazy torch / "
            "transformers imports included); Snakemake = the rest of the job's wall time.", ""]
    table = [{"rule": r["rule"] if r["rule"] != "TOTAL" else "**total**", "jobs": r["jobs"],
              "wall": _seconds(r["wall_s"]), "startup": _seconds(r["startup_s"]),
              "model loading": _seconds(r["model_load_s"]), "compute": _seconds(r["compute_s"]),
              "Snakemake": _seconds(r["other_s"])} for r in rows]
    out += [md_table(table, ["rule", "jobs", "wall", "startup", "model loading", "compute", "Snakemake"]), ""]
    return out


def study_sections(results: Path) -> list[str]:
    out: list[str] = []
    tables = results / "tables"
    for study, entries in STUDY_TABLES.items():
        out += [f"## {study}", ""]
        present = [e for e in entries if (tables / e[0]).is_file()]
        if not present:
            out += [NOT_MEASURED.format(target="make run") + " (none of its tables in `results/tables/`)", ""]
            continue
        for name, heading, prefer in present:
            body = (correlation_section(tables / name) if prefer == ()
                    else ranking_section(tables / name) if prefer == RANKING
                    else csv_section(tables / name, prefer))
            out += [f"### {heading}", "", body, ""]
    return out


def bench_section(results: Path) -> list[str]:
    out = ["## Benchmarks (`make bench`)", ""]
    path = results / "benchmarks" / "bench_summary.json"
    if not path.is_file():
        return out + [NOT_MEASURED.format(target="make bench"), ""]
    b = json.loads(path.read_text())
    rows = []
    if g := b.get("generation"):
        rows.append({"benchmark": "generation, batched vs one prompt at a time (transformers, SmolLM2)",
                     "target": f"≥ {fmt(g.get('target'))}×",
                     "measured": f"{g['ratio']:.2f}× ({g['batched_tok_s']:.1f} vs {g['sequential_tok_s']:.1f} "
                                 f"tokens/s; batch {g.get('batch_size')}; {g.get('identical_outputs')}/"
                                 f"{g.get('n_prompts')} outputs identical)",
                     "script": "`bench_generation.py`"})
    if s := b.get("scoring"):
        rows.append({"benchmark": f"scoring engine, batched vs per-example loop ({s.get('n_pairs')} pairs)",
                     "target": f"≥ {fmt(s.get('target'))}×, agree to 1e-4",
                     "measured": f"{s['ratio']:.2f}×, max rel. error {s['max_rel_err']:.1e} "
                                 f"({fmt(s.get('work_ratio'))}× less arithmetic; {fmt(s.get('batched_gflop_s'))} "
                                 f"vs {fmt(s.get('naive_gflop_s'))} GFLOP/s)",
                     "script": "`bench_scoring.py`"})
    if d := b.get("paper_dry_run"):
        rows.append({"benchmark": "`snakemake -n --configfile config/paper.yaml`",
                     "target": f"< {fmt(d.get('target_s'))} s",
                     "measured": f"{fmt(d['seconds'])} s for {d['jobs']} jobs", "script": "`run_all.py`"})
    if r := b.get("rank_teachers"):
        a, p = r["default_4_generators"], r.get("plus_dataset_generator") or {}
        extra = f"; + a dataset generator: {fmt(p['seconds'])} s ({p['jobs']} jobs)" if p else ""
        rows.append({"benchmark": "`teachfit rank-teachers` on the default config", "target": "≤ 300 s",
                     "measured": f"{fmt(a['seconds'])} s ({a['jobs']} jobs){extra}",
                     "script": "`bench_rank_teachers.py`"})
    if o := b.get("job_overhead"):
        rows.append({"benchmark": "torch + transformers import in a fresh process", "target": "–",
                     "measured": f"{fmt(o.get('model_stack_import_s'))} s", "script": "`run_all.py`"})
    return out + [md_table(rows, ["benchmark", "target", "measured", "script"]), ""]


def gate_section(results: Path) -> list[str]:
    out = ["## Evolver validity gate on its labelled set (`make gate-quality`)", ""]
    path = results / "gate" / "quality.csv"
    if not path.is_file():
        return out + [NOT_MEASURED.format(target="make gate-quality"), ""]
    import polars as pl

    df = pl.read_csv(path, infer_schema_length=None)
    if "kind" in df.columns:
        df = df.filter(pl.col("kind") == "all")
    cols = [c for c in ("mode", "split", "n", "detected", "recall", "precision", "false_drops") if c in df.columns]
    return out + [md_table(df.to_dicts(), cols or df.columns), ""]


def fidelity_section(results: Path) -> list[str]:
    out = ["## Scoring conventions vs the reference code (`make fidelity`)", ""]
    path = results / "fidelity" / "fidelity.json"
    if not path.is_file():
        return out + [NOT_MEASURED.format(target="make fidelity"), ""]
    data = json.loads(path.read_text())
    rows = []
    for model, cases in data.items():
        for case, v in cases.items():
            if isinstance(v, dict) and "max_rel_diff" in v:
                rows.append({"model": model, "case": case, "pairs": v.get("n_pairs"),
                             "max abs diff": v["max_abs_diff"], "max rel diff": v["max_rel_diff"],
                             "Spearman IFD": v.get("spearman_ifd"), "Spearman IC-IFD": v.get("spearman_icifd")})
    return out + [md_table(rows, ["model", "case", "pairs", "max abs diff", "max rel diff", "Spearman IFD",
                                  "Spearman IC-IFD"]), ""]


def write_measurements(results: str | Path = "results", out: str | Path = "docs/measurements.md",
                       log: str | Path | None = None, conditions: str | None = None) -> str:
    """Write the measurements page ``out`` (markdown) from ``results`` and return its text.

    Sections, in order: the default run (jobs, wall time, seconds per rule), the teacher,
    evolver and IFS studies' tables (``<results>/tables/*.csv``), ``make bench``, ``make
    gate-quality``, ``make fidelity``; a section whose input is missing says so in one line
    (:data:`NOT_MEASURED`). ``log`` is the run's Snakemake log (default: see
    :func:`snakemake_log`). ``conditions``: one sentence on how the numbers were obtained (the
    code's commit, other load on the machine), printed under the title.
    """
    results = Path(results)
    lines = [TITLE, "",
             "Written by `benchmarks/write_measurements.py` (`make measurements`) from the files under "
             "`results/`; do not edit by hand. Definitions: [conventions.md](conventions.md); what each "
             "table means: [studies.md](studies.md).", ""]
    if conditions:
        lines += [f"Conditions: {conditions}", ""]
    lines += default_run_section(results, Path(log) if log else None)
    lines += study_sections(results)
    lines += bench_section(results)
    lines += gate_section(results)
    lines += fidelity_section(results)
    text = "\n".join(lines).rstrip() + "\n"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text, encoding="utf-8")
    copy_readme_figure(results, Path(out).parent)
    return text


def copy_readme_figure(results: Path, docs: Path) -> Path | None:
    """Copy :data:`README_FIGURE` from ``<results>/figures/`` to ``docs``; the copy's path, or None
    (nothing changed) when the run has not made the figure."""
    src, dst = results / "figures" / README_FIGURE[0], docs / README_FIGURE[1]
    if not src.is_file():
        return None
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results")
    ap.add_argument("--log", default=None, help="the default run's Snakemake log")
    ap.add_argument("--out", default="docs/measurements.md")
    ap.add_argument("--conditions", default=None,
                    help="one sentence on how the numbers were obtained (commit, machine load)")
    args = ap.parse_args()
    write_measurements(args.results, args.out, args.log, args.conditions)
    print(args.out)


if __name__ == "__main__":
    main()
