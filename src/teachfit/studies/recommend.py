"""Recommend a teacher and select data for the user's own student and data, without fine-tuning
(issue 14): one function per rule of ``rules/recommend.smk``.

* :func:`rank_teachers` -- for each student (base model), the candidate teachers (the teacher
  study's generators: models, or existing data sets through the ``dataset`` generator kind) ranked
  by CAR and by each other data metric of ``teacher_data_metrics.csv`` (:data:`RANKING_METRICS`),
  a figure, and a one-paragraph verdict per student generated from the numbers. Its DAG holds
  generation, rewards and loss scoring only; where ``teacher.ranking.measured`` is on, it also
  reads the full study's ``teacher_performance.csv`` and reports, per metric, the Spearman rho
  between the predicted and the measured ranks (did the metric pick well?) with a 95 % bootstrap
  interval over generators, and names the metric that predicted best. The measures and how to
  read the table: ``docs/teacher-measures.md``.
* :func:`prepare_select_data` and :func:`select_data` -- a user data set -> its top-k% by IC-IFD,
  IFD (:func:`teachfit.training.selection.select_top`, which owns the ranking and any IFD filter)
  or the student's compatibility loss L(A|Q) (lowest first), as a ready-to-train chat-messages
  JSONL, plus a table that accounts for every row of the file (kept, or dropped and why).

Losses are mean per-token NLLs in nats under the student (:mod:`teachfit.scoring.losses`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit import figures
from teachfit.correlate import rank_correlation
from teachfit.generation.per_instruction import criterion_values
from teachfit.io import (
    DataError,
    content_id,
    read_json,
    read_parquet,
    write_csv,
    write_jsonl,
    write_parquet,
    write_text,
)
from teachfit.pairs import ROW_STATUSES, read_pairs
from teachfit.training.selection import add_selection_metrics, select_top

log = logging.getLogger(__name__)

#: Ranked metrics of teacher_data_metrics.csv: column -> (direction, label). ``higher``: the highest
#: value ranks first. CAR (Xu et al. 2024, Eq. 3) and the reward: higher is better by definition;
#: length: longer responses first (the length baseline of Xu et al. 2024, Sec. 5); PPL: lower first
#: (more compatible with the scoring model, CAR's reasoning); IFD: higher first (Li et al. 2024:
#: a high IFD marks data the model learns most from).
#: RSR (Rank-Surprisal Ratio, Yang et al. 2026, arXiv 2601.14249): lower first (the paper: a low
#: RSR marks data that is informative yet aligned with the student;
#: :func:`teachfit.scoring.metrics.dataset_rsr`).
RANKING_METRICS: dict[str, tuple[str, str]] = {
    "car": ("higher", "CAR"),
    "rsr_base": ("lower", "RSR under the student"),
    "reward": ("higher", "reward"),
    "length": ("higher", "length"),
    "ppl_base": ("lower", "PPL under the student"),
    "ifd_base": ("higher", "IFD under the student"),
    "ppl_ref": ("lower", "PPL under the reference model"),
    "ifd_ref": ("higher", "IFD under the reference model"),
}

#: Columns of teacher_performance.csv copied into the measured ranking: does a mixed
#: (``per_instruction``) teacher beat every single one (:func:`teachfit.studies.teacher.build_teacher_performance`).
MIXED_COLUMNS = ("mixed", "margin_vs_best_single", "margin_low", "margin_high", "beats_every_single")

#: Per-generator counts copied from a dataset generator's join report into the ranking table.
JOIN_COLUMNS = {"rows": "rows_read", "unmatched": "unmatched_rows", "duplicate": "duplicate_rows",
                "unusable_rows": "unusable_rows", "missing": "missing_instructions"}


# --------------------------------------------------------------------------- ranking


def rank_values(values: Sequence[float], direction: str) -> list[int | None]:
    """Competition ranks (1 = best; ties share the best rank: 1, 1, 3) of ``values``; ``direction``
    ``higher`` ranks the largest first, ``lower`` the smallest. NaN / None get no rank (None)."""
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction must be 'higher' or 'lower', got {direction!r}")
    arr = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    sign = -1.0 if direction == "higher" else 1.0
    ranks: list[int | None] = []
    for v in arr:
        if not np.isfinite(v):
            ranks.append(None)
        else:
            ranks.append(1 + int(np.sum(np.isfinite(arr) & (sign * arr < sign * v))))
    return ranks


def _join_counts(join_reports: Sequence[str], join_generators: Sequence[str]) -> dict[str, dict[str, Any]]:
    if len(join_reports) != len(join_generators):
        raise ValueError(f"{len(join_reports)} join reports but {len(join_generators)} entries in params "
                         "join_generators; the rule must pass them aligned")
    return {g: read_json(p) for g, p in zip(join_generators, join_reports)}


def bootstrap_rho(predicted: Sequence[float], measured: Sequence[float], n: int, seed: int,
                  confidence: float = 0.95) -> tuple[float, float]:
    """Percentile interval (``confidence``, default 95 %) of the Spearman rho between ``predicted``
    and ``measured`` ranks when the generators are resampled with replacement: ``n`` resamples
    of ``len(predicted)`` generator indices drawn by ``numpy.random.default_rng(seed)``, rho of each
    by :func:`teachfit.correlate.rank_correlation` (scipy's ``spearmanr``; ties get average
    ranks); resamples where rho is undefined (fewer than 3 distinct generators, constant ranks)
    are dropped. (NaN, NaN) when no resample has a rho."""
    x = np.asarray(predicted, dtype=np.float64)
    y = np.asarray(measured, dtype=np.float64)
    rng = np.random.default_rng(int(seed))
    draws = []
    for _ in range(int(n)):
        idx = rng.integers(0, x.size, size=x.size)
        rho, _, _ = rank_correlation(x[idx], y[idx])
        if math.isfinite(rho):
            draws.append(rho)
    if not draws:
        return math.nan, math.nan
    alpha = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(np.asarray(draws), [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def best_measure(rhos: Mapping[str, float]) -> str | None:
    """The measure with the highest finite rho (ties: the first in :data:`RANKING_METRICS` order);
    None when no rho is finite."""
    finite = [m for m in RANKING_METRICS if m in rhos and rhos[m] is not None and math.isfinite(rhos[m])]
    return max(finite, key=lambda m: rhos[m]) if finite else None


def build_ranking(metrics: pl.DataFrame, generators: Sequence[str], sources: Mapping[str, str],
                  joins: Mapping[str, Mapping[str, Any]], performance: pl.DataFrame | None,
                  bootstrap: Mapping[str, Any] | None = None) -> pl.DataFrame:
    """The ranking table (see :func:`rank_teachers`) from the data metrics (one row per (generator,
    base)), the candidates in config order, their sources, the dataset generators' join reports
    and, optionally, the measured performance (``base``, ``generator``, ``performance``) with the
    bootstrap settings of the rho intervals (``n``, ``seed``: ``teacher.ranking.bootstrap``)."""
    need = ["generator", "base", "n", *RANKING_METRICS]
    missing = [c for c in need if c not in metrics.columns]
    if missing:
        raise DataError(f"teacher data metrics: missing column(s) {missing}; has {metrics.columns}")
    unknown = sorted(set(metrics["generator"]) - set(generators))
    absent = [g for g in generators if g not in set(metrics["generator"])]
    if absent or unknown:
        raise DataError(f"teacher data metrics: generators {sorted(set(metrics['generator']))} do not match "
                        f"teacher.generators {list(generators)}")
    order = {g: i for i, g in enumerate(generators)}
    frames = []
    for base in list(dict.fromkeys(metrics["base"].to_list())):
        part = metrics.filter(pl.col("base") == base)
        part = part.with_columns(pl.col("generator").replace_strict(order, return_dtype=pl.Int64).alias("_order"))
        part = part.sort("_order")
        cols: dict[str, Any] = {}
        for m, (direction, _) in RANKING_METRICS.items():
            cols[f"{m}_rank"] = pl.Series(rank_values(part[m].to_list(), direction), dtype=pl.Int64)
        part = part.with_columns(**cols)
        if performance is not None:
            keep = ["generator", "performance", *[c for c in MIXED_COLUMNS if c in performance.columns]]
            perf = performance.filter(pl.col("base") == base).select(keep)
            part = part.join(perf, on="generator", how="left", validate="1:1")
            if part["performance"].null_count():
                lost = part.filter(pl.col("performance").is_null())["generator"].to_list()
                raise DataError(f"teacher_performance.csv: no performance of base {base!r} for {lost}")
            part = part.with_columns(pl.Series(
                "performance_rank", rank_values(part["performance"].to_list(), "higher"), dtype=pl.Int64))
            if bootstrap is None:
                raise ValueError("build_ranking: measured performance needs the bootstrap settings (n, seed)")
            rhos: dict[str, float] = {}
            cols_rho: dict[str, float] = {}
            measured_rank = part["performance_rank"].cast(pl.Float64).to_numpy()
            for m in RANKING_METRICS:
                predicted = part[f"{m}_rank"].cast(pl.Float64).to_numpy()
                rho, _, _ = rank_correlation(predicted, measured_rank)
                ok = np.isfinite(predicted) & np.isfinite(measured_rank)
                lo, hi = bootstrap_rho(predicted[ok], measured_rank[ok], bootstrap["n"], bootstrap["seed"])
                rhos[m] = rho
                cols_rho.update({f"{m}_rho": rho, f"{m}_rho_low": lo, f"{m}_rho_high": hi})
            best = best_measure(rhos)
            part = part.with_columns(*(pl.lit(v, dtype=pl.Float64).alias(k) for k, v in cols_rho.items()),
                                     # teachers with a measured rank (an undefined performance has none)
                                     pl.lit(int(np.isfinite(measured_rank).sum()), dtype=pl.Int64).alias("rho_n"),
                                     pl.lit(best, dtype=pl.String).alias("best_measure"))
        frames.append(part.sort(["car_rank", "_order"], nulls_last=True))
    df = pl.concat(frames, how="vertical")
    join_cols = {col: [joins.get(g, {}).get(key, 0 if key != "rows" else None) for g in df["generator"]]
                 for key, col in JOIN_COLUMNS.items()}
    df = df.with_columns(
        pl.Series("source", [sources.get(g, "") for g in df["generator"]], dtype=pl.String),
        *(pl.Series(col, vals, dtype=pl.Int64) for col, vals in join_cols.items()),
    )
    front = ["base", "generator", "source", "n", *JOIN_COLUMNS.values()]
    ranked = [c for m in RANKING_METRICS for c in (m, f"{m}_rank")]
    extra = [c for c in MIXED_COLUMNS if performance is not None and c in df.columns]
    tail = (["performance", "performance_rank", *extra,
             *[f"{m}_rho{x}" for m in RANKING_METRICS for x in ("", "_low", "_high")], "rho_n", "best_measure"]
            if performance is not None else [])
    return df.select(*front, *ranked, *tail)


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    return f"{v:.3g}" if isinstance(v, float) else str(v)


def _names(items: Sequence[str]) -> str:
    quoted = [f"``{x}``" for x in items]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]


def verdict_paragraph(part: pl.DataFrame) -> str:
    """The verdict on one student (the ranking rows of one base), as one reStructuredText paragraph
    generated from the numbers: CAR's choice and runner-up, the other metrics' first choices and how
    many agree, the coverage of dataset generators and, with measured performance, whether each
    metric would have chosen well (Spearman rho of predicted vs measured ranks)."""
    base = part["base"][0]
    rows = part.to_dicts()
    k = len(rows)
    s = [f"**Student** ``{base}`` ({k} candidate teacher{'s' if k != 1 else ''})."]
    car_first = [r["generator"] for r in rows if r["car_rank"] == 1]
    if not car_first:
        s.append("CAR is undefined for every candidate (no finite value); nothing can be recommended.")
    else:
        best = next(r for r in rows if r["generator"] == car_first[0])
        tie = " (tie)" if len(car_first) > 1 else ""
        s.append(f"CAR ranks {_names(car_first)} first{tie} (CAR {_fmt(best['car'])}")
        runner = [r for r in rows if r["car_rank"] is not None and r["car_rank"] > 1]
        if runner:
            r2 = min(runner, key=lambda r: r["car_rank"])
            s[-1] += f"; next ``{r2['generator']}``, {_fmt(r2['car'])})."
        else:
            s[-1] += ")."
        others, agree = [], 0
        for m, (direction, label) in RANKING_METRICS.items():
            if m == "car":
                continue
            firsts = [r["generator"] for r in rows if r[f"{m}_rank"] == 1]
            if firsts:
                others.append(f"{label} ({'highest' if direction == 'higher' else 'lowest'}) {_names(firsts)}")
                agree += bool(set(firsts) & set(car_first))
        if others:
            s.append(f"The other data metrics pick: {'; '.join(others)}; {agree} of {len(others)} agree with CAR.")
        s.append(f"Recommended teacher by CAR: {_names(car_first)}.")
    for r in rows:
        if r["rows_read"] is not None:
            used = r["n"]
            s.append(f"Data set ``{r['generator']}`` ({r['source']}) answered {used} of "
                     f"{used + r['missing_instructions']} instructions ({r['rows_read']} rows read: "
                     f"{r['unmatched_rows']} unmatched, {r['duplicate_rows']} duplicate, "
                     f"{r['unusable_rows']} unusable); its metrics average over those {used}.")
    undefined = ([r["generator"] for r in rows if r["performance_rank"] is None]
                 if "performance" in part.columns else [])
    if undefined:
        s.append(f"Measured performance is undefined (not a finite number) for {_names(undefined)} "
                 "(teacher_performance.csv: e.g. a win rate with no parseable judgment); "
                 + ("the predicted-vs-measured check cannot be made." if len(undefined) == k
                    else "the check below ranks the others only."))
    if "performance" in part.columns and len(undefined) < k:
        best_measured = [r["generator"] for r in rows if r["performance_rank"] == 1]
        top = next(r for r in rows if r["generator"] == best_measured[0])
        s.append(f"Measured after fine-tuning (the full study): {_names(best_measured)} performed best "
                 f"(performance {_fmt(top['performance'])}).")
        rho = rows[0]["car_rho"]
        hit = bool(set(car_first) & set(best_measured))
        s.append(f"CAR's predicted ranking has Spearman rho = {_fmt(rho)} with the measured ranking over "
                 f"{rows[0]['rho_n']} teachers, and CAR {'would' if hit else 'would not'} have chosen the "
                 "best teacher.")
        best_m = rows[0]["best_measure"]
        if best_m:
            s.append(f"The metric closest to the measured ranking was {RANKING_METRICS[best_m][1]} "
                     f"(rho = {_fmt(rows[0][f'{best_m}_rho'])}, 95% bootstrap interval over generators "
                     f"[{_fmt(rows[0][f'{best_m}_rho_low'])}, {_fmt(rows[0][f'{best_m}_rho_high'])}]).")
        else:
            s.append("No metric has a defined rho with the measured ranking.")
        for r in rows:
            if r.get("mixed"):
                verdict = "beat" if r["beats_every_single"] else "did not beat"
                lo, hi = r["margin_low"], r["margin_high"]
                noise = (" -- within noise: the interval contains 0"
                         if lo is not None and hi is not None and lo <= 0 <= hi else "")
                s.append(f"The mixed teacher ``{r['generator']}`` {verdict} every single teacher (margin over "
                         f"the best single one {_fmt(r['margin_vs_best_single'])}, 95% interval "
                         f"[{_fmt(lo)}, {_fmt(hi)}]{noise}).")
        if rows[0]["rho_n"] < 10:
            s.append(f"With {rows[0]['rho_n']} teachers a rank correlation is weak evidence.")
    elif "performance" not in part.columns:
        s.append("Not checked against fine-tuned students: ``teachfit rank-teachers --measured`` (or the "
                 "full teacher study) adds the predicted-vs-measured check.")
    return " ".join(s)


def plot_ranking(df: pl.DataFrame, path: str | Path, style: Mapping[str, Any]) -> list[Path]:
    """One panel per student: the rank (1 = best) of every candidate teacher under each metric
    (+ the measured rank where known), rho vs the measured ranks in the column labels."""
    fs = figures.FigureStyle.from_dict(style)
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    bases = list(dict.fromkeys(df["base"].to_list()))
    measured = "performance_rank" in df.columns
    cols = [*RANKING_METRICS, *(["performance"] if measured else [])]
    n_gen = max(df.filter(pl.col("base") == b).height for b in bases)
    plt.rcParams.update({"font.size": fs.font_size})
    fig, axes = plt.subplots(1, len(bases), squeeze=False,
                             figsize=(max(fs.width, 1.5 + 0.9 * len(cols)) * len(bases),
                                      max(fs.height, 1.8 + 0.45 * n_gen)))
    for ax, base in zip(axes[0], bases):
        part = df.filter(pl.col("base") == base)
        grid = np.array([[np.nan if v is None else v for v in part[f"{c}_rank"].to_list()] for c in cols],
                        dtype=float).T
        ax.imshow(np.ma.masked_invalid(grid), cmap="viridis_r", aspect="auto", vmin=1, vmax=max(2, part.height))
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(j, i, "-" if not np.isfinite(grid[i, j]) else f"{int(grid[i, j])}",
                        ha="center", va="center", color="black" if grid[i, j] <= part.height / 2 else "white")
        labels = []
        for c in cols:
            if c == "performance":
                labels.append("measured")
                continue
            arrow = "↑" if RANKING_METRICS[c][0] == "higher" else "↓"
            rho = part[f"{c}_rho"][0] if measured else None
            labels.append(f"{c} {arrow}" + (f"\nρ={rho:.2f}" if rho is not None and math.isfinite(rho) else ""))
        ax.set_xticks(range(len(cols)), labels, rotation=45, ha="right")
        ax.set_yticks(range(part.height), part["generator"].to_list())
        ax.set_title(f"student {base}: teacher rank (1 = best)")
    return figures.save(fig, Path(path).with_suffix(""), fs)


def rank_teachers(data_metrics: str | Path, join_reports: list[str], measured: list[str], table: str | Path,
                  figure: str | Path, verdict: str | Path, generators: list[str], sources: Mapping[str, str],
                  join_generators: list[str], style: Mapping[str, Any],
                  bootstrap: Mapping[str, Any]) -> pl.DataFrame:
    """Rank the candidate teachers of every student without fine-tuning; rule ``rank_teachers``.

    ``data_metrics`` is ``teacher_data_metrics.csv`` (:func:`teachfit.studies.teacher.compute_car`:
    one row per (generator, base) with ``n`` and the :data:`RANKING_METRICS` columns);
    ``generators`` the candidates (``teacher.generators``, the order ties keep); ``sources`` maps
    each to where its responses come from (``model <alias>`` or ``dataset <file>``);
    ``join_reports[i]`` is dataset generator ``join_generators[i]``'s join report
    (:func:`teachfit.generation.dataset.import_responses`); ``measured`` is empty, or the full
    study's ``teacher_performance.csv`` when ``teacher.ranking.measured`` is on; ``style`` is
    ``analysis.figures``.

    Writes ``table`` (CSV), one row per (base, generator), sorted by base and CAR rank: ``base,
    generator, source, n`` (responses the metrics average over), the join counts
    (:data:`JOIN_COLUMNS`: ``rows_read`` is null for model generators, the others 0), then for each
    metric ``m`` its value and ``m_rank`` (1 = best, ties share the best rank, null when the value
    is NaN); with ``measured`` also ``performance``, ``performance_rank``, ``m_rho`` (Spearman rho
    of ``m_rank`` vs ``performance_rank`` over the base's generators: +1 = the metric orders the
    teachers as fine-tuning did; NaN below 3 generators or for constant ranks), ``m_rho_low`` /
    ``m_rho_high`` (95 % percentile interval of rho when the generators are resampled with
    replacement, :func:`bootstrap_rho` with ``bootstrap`` = ``teacher.ranking.bootstrap``: ``n``
    resamples, ``seed``), ``rho_n`` and ``best_measure`` (the metric with the highest rho); the
    :data:`MIXED_COLUMNS` of ``teacher_performance.csv`` when it has them (per-instruction teachers).
    Writes ``figure`` (:func:`plot_ranking`, PNG + the other configured formats) and ``verdict``
    (reStructuredText, one :func:`verdict_paragraph` per base; the report shows it).
    Raises :class:`DataError` when the metrics lack a column or their generators differ from
    ``generators``, or the performance table lacks a (base, generator); ``ValueError`` when
    params and inputs are not aligned or more than one performance table is given.
    """
    if len(measured) > 1:
        raise ValueError(f"rank_teachers: at most one performance table, got {measured}")
    metrics = pl.read_csv(data_metrics)
    performance = None
    if measured:
        performance = pl.read_csv(measured[0])
        need = [c for c in ("base", "generator", "performance") if c not in performance.columns]
        if need:
            raise DataError(f"{measured[0]}: missing column(s) {need}; has {performance.columns}")
    joins = _join_counts(join_reports, join_generators)
    df = build_ranking(metrics, generators, sources, joins, performance, bootstrap)
    paragraphs = [verdict_paragraph(df.filter(pl.col("base") == b))
                  for b in dict.fromkeys(df["base"].to_list())]
    write_text("\n\n".join(paragraphs) + "\n", verdict)
    plot_ranking(df, figure, style)
    write_csv(df, table)
    for p in paragraphs:
        log.info("verdict: %s", p)
    return df


# --------------------------------------------------------------------------- data selection

#: Why a row of the user's data set is (not) in the selected JSONL; ``read_pairs`` statuses too.
SELECT_REASONS = {
    "kept": "in the top k% by the metric",
    "below_top_k": "scored, ranked below the top k%",
    "filtered_by_select_top": "dropped by select_top's own filter before top-k (e.g. IFD > 1 with the IFD "
                              "selection of issue 11)",
    "no_score": "the metric is NaN (the pair was truncated away or has no scorable tokens)",
    "duplicate": "the same (system, instruction, response) as an earlier row",
}
#: The reason of a row that another response to its instruction beat (``per_instruction`` set).
NOT_CHOSEN = {"not_chosen_per_instruction": "another response to the same instruction has a lower L(A|Q) under "
                                            "the student (per_instruction: student_likelihood, GRAPE)"}


def per_instruction_keep(df: pl.DataFrame) -> pl.DataFrame:
    """Per instruction (rows with the same ``system`` and ``instruction``), the row with the highest
    student likelihood, i.e. the lowest finite ``loss_a_given_q`` (GRAPE, arXiv 2502.04194;
    :func:`teachfit.generation.per_instruction.criterion_values`); ties: the lower ``source_index``.
    Instructions whose rows all lack a finite loss keep none here (their rows are ``no_score``)."""
    v = criterion_values(df, "student_likelihood")
    scored = df.with_columns(pl.Series("_v", v, dtype=pl.Float64)).filter(pl.col("_v").is_finite())
    return (scored.sort(["_v", "source_index"], descending=[True, False])
            .group_by(["system", "instruction"], maintain_order=True).first().drop("_v"))

SELECT_METRIC_COLUMNS = {"icifd": "icifd", "ifd": "ifd", "loss": "loss_a_given_q"}
#: The scoring convention each metric is computed under when ``select_data.<name>.convention`` is
#: null: the convention of the metric's reference (IC-IFD: HypherX/Evolution-Analysis
#: ``eval_loss.py``; IFD: tianyi-lab/Cherry_LLM; CAR's L: the student's chat template).
SELECT_METRIC_CONVENTIONS = {"icifd": "evolution_analysis", "ifd": "cherry", "loss": "chat"}


def select_data_convention(entry: Mapping[str, Any]) -> str:
    """The scoring convention of a ``select_data`` entry: its ``convention``, or (null) the
    metric's reference convention (:data:`SELECT_METRIC_CONVENTIONS`). Raises ``ValueError``
    for an unknown metric."""
    if entry.get("convention"):
        return str(entry["convention"])
    if entry["metric"] not in SELECT_METRIC_CONVENTIONS:
        raise ValueError(f"select_data metric {entry['metric']!r} not in {list(SELECT_METRIC_CONVENTIONS)}")
    return SELECT_METRIC_CONVENTIONS[entry["metric"]]


def prepare_select_data(source: str | Path, pairs: str | Path, rejected: str | Path, name: str,
                        entry: Mapping[str, Any]) -> pl.DataFrame:
    """Rule ``prepare_select_data``: the user's data set -> the pairs to score and the rows that
    cannot be used (with the reason), so that :func:`select_data` accounts for every record.

    ``source`` is the configured ``select_data.<name>.path`` (or the downloaded hub data set);
    ``entry`` the validated ``select_data.<name>`` entry (format and field names). Writes ``pairs``
    (Parquet ``id`` (content hash of system, instruction, response), ``instruction``, ``response``,
    ``system``, ``source_index``): the usable rows, the first of exact duplicates only; and
    ``rejected`` (Parquet ``source_index``, ``reason``, ``instruction``): the others, ``reason`` a
    status of :data:`teachfit.pairs.ROW_STATUSES` or ``duplicate``.
    Raises :class:`DataError` naming the file (see :func:`teachfit.pairs.read_pairs`) or when no
    row is usable.
    """
    df = read_pairs(source, entry)
    ok = df.filter(pl.col("status") == "ok").with_columns(
        pl.struct("system", "instruction", "response").map_elements(
            lambda r: content_id(name, r["system"], r["instruction"], r["response"], prefix="u"),
            return_dtype=pl.String).alias("id"))
    first = ok.unique("id", keep="first", maintain_order=True)
    dup = ok.filter(~pl.col("source_index").is_in(first["source_index"].implode()))
    bad = pl.concat([
        df.filter(pl.col("status") != "ok").select("source_index", pl.col("status").alias("reason"), "instruction"),
        dup.select("source_index", pl.lit("duplicate").alias("reason"), "instruction"),
    ]).sort("source_index")
    if first.height == 0:
        counts = dict(bad.group_by("reason").len().iter_rows())
        raise DataError(f"{source}: no usable (instruction, response) row in {df.height} records ({counts})")
    counts = {r: n for r, n in bad.group_by("reason").len().sort("reason").iter_rows()}
    log.log(logging.WARNING if bad.height else logging.INFO,
            "select_data %s (%s): %d records, %d usable pairs, %d not usable %s",
            name, source, df.height, first.height, bad.height, counts)
    write_parquet(bad, rejected)
    out = first.select("id", "instruction", "response", "system", "source_index")
    write_parquet(out, pairs)
    return out


def to_messages(row: Mapping[str, Any]) -> list[dict[str, str]]:
    """The chat messages of one pair (trl / HF conversational format): system turn if any, user, assistant."""
    turns = [{"role": "system", "content": row["system"]}] if row.get("system") is not None else []
    return [*turns, {"role": "user", "content": row["instruction"]},
            {"role": "assistant", "content": row["response"]}]


def _top_by_loss(df: pl.DataFrame, top_percent: float) -> pl.DataFrame:
    """The ``ceil(n * top_percent / 100)`` rows (at least one) of lowest L(A|Q) under the student,
    ties by id -- the count rule of :func:`teachfit.training.selection.select_top`."""
    k = max(1, math.ceil(df.height * top_percent / 100 - 1e-9)) if df.height else 0
    return (df.sort(["loss_a_given_q", "id"]).head(k)
            .with_columns(pl.int_range(0, pl.len(), dtype=pl.Int64).alias("selection_rank")))


def select_data(pairs: str | Path, rejected: str | Path, scores: str | Path, selected: str | Path,
                decisions: str | Path, summary: str | Path, name: str,
                selection: Mapping[str, Any]) -> pl.DataFrame:
    """Rule ``select_data``: keep the top ``selection["top_percent"]`` % of a user data set by
    ``selection["metric"]``, without fine-tuning.

    Inputs: ``pairs`` and ``rejected`` (:func:`prepare_select_data`), ``scores`` (the pairs scored by
    the student: :func:`teachfit.scoring.losses.score_losses`, losses in nats). Metrics: ``icifd``
    (IC-IFD = L(A|Q) / (L(Q) L(A)), Hui et al. 2024) and ``ifd`` (IFD = L(A|Q) / L(A), Li et al.
    2024), highest first, ranked by :func:`teachfit.training.selection.select_top` (which owns the
    count rule, ties and any IFD filter); ``loss`` (the student's compatibility loss L(A|Q), CAR's L,
    Xu et al. 2024), lowest first with the same count rule. Pairs whose metric is NaN are not ranked
    (``no_score``); k% applies to the scored pairs. With ``selection["per_instruction"]`` =
    ``student_likelihood`` only each instruction's most student-likely response
    (:func:`per_instruction_keep`, L(A|Q) of the entry's convention) competes; the others are
    ``not_chosen_per_instruction``.

    Writes ``selected`` (JSONL, one ``{"messages": [...]}`` per kept pair in rank order: a system
    turn if the row had one, the user turn, the assistant turn -- what trl's SFTTrainer trains on);
    ``decisions`` (CSV, one row per record of the file in file order: ``source_index, id, kept,
    reason, rank`` (1 = best, kept rows), the metric ``score``, ``loss_q, loss_a_given_q, loss_a,
    ifd, icifd`` and the first 100 characters of the instruction); ``summary`` (CSV: ``name, metric,
    top_percent, reason, rows, meaning``, one row per reason of :data:`SELECT_REASONS` and
    :data:`teachfit.pairs.ROW_STATUSES`, then ``total`` = every record of the file).
    Raises ``ValueError`` for an unknown metric, :class:`DataError` when a file lacks a column.
    """
    metric, top_percent = selection["metric"], float(selection["top_percent"])
    if metric not in SELECT_METRIC_COLUMNS:
        raise ValueError(f"select_data.{name}.metric: {metric!r} not in {list(SELECT_METRIC_COLUMNS)}")
    df = read_parquet(pairs, required=["id", "instruction", "response", "system", "source_index"])
    bad = read_parquet(rejected, required=["source_index", "reason", "instruction"])
    sc = read_parquet(scores, required=["id", "loss_q", "loss_a_given_q", "loss_a", "n_a_tokens"])
    df = add_selection_metrics(df, sc)
    col = SELECT_METRIC_COLUMNS[metric]
    finite = pl.col(col).is_not_null() & pl.col(col).is_finite()
    per = selection.get("per_instruction")
    if per not in (None, "student_likelihood"):
        raise ValueError(f"select_data.{name}.per_instruction: {per!r} not in [null, 'student_likelihood']")
    chosen_ids = per_instruction_keep(df)["id"].implode() if per else df["id"].implode()
    beaten = finite & ~pl.col("id").is_in(chosen_ids)
    scored = df.filter(finite & pl.col("id").is_in(chosen_ids))
    if metric == "loss":
        kept = _top_by_loss(scored, top_percent)
        eligible = scored
    else:
        kept = select_top(scored, method=metric, top_percent=top_percent)
        eligible = select_top(scored, method=metric, top_percent=100.0)
    kept_ids = kept["id"].implode()
    filtered = scored.filter(~pl.col("id").is_in(eligible["id"].implode()))
    reason = (pl.when(pl.col("id").is_in(kept_ids)).then(pl.lit("kept"))
              .when(beaten).then(pl.lit("not_chosen_per_instruction"))
              .when(pl.col("id").is_in(filtered["id"].implode())).then(pl.lit("filtered_by_select_top"))
              .when(finite).then(pl.lit("below_top_k"))
              .otherwise(pl.lit("no_score")))
    ranks = kept.select("id", (pl.col("selection_rank") + 1).alias("rank"))
    rows = (df.with_columns(reason.alias("reason"), pl.col(col).alias("score"))
            .join(ranks, on="id", how="left")
            .select("source_index", "id", (pl.col("reason") == "kept").alias("kept"), "reason", "rank", "score",
                    "loss_q", "loss_a_given_q", "loss_a", "ifd", "icifd", "instruction"))
    rejected_rows = bad.select(
        "source_index", pl.lit(None, dtype=pl.String).alias("id"), pl.lit(False).alias("kept"), "reason",
        *(pl.lit(None, dtype=t).alias(c) for c, t in (("rank", pl.Int64), ("score", pl.Float64),
                                                      ("loss_q", pl.Float64), ("loss_a_given_q", pl.Float64),
                                                      ("loss_a", pl.Float64), ("ifd", pl.Float64),
                                                      ("icifd", pl.Float64))),
        "instruction")
    table = (pl.concat([rows, rejected_rows], how="vertical_relaxed").sort("source_index")
             .with_columns(pl.col("instruction").str.slice(0, 100)))
    conversations = [{"messages": to_messages(r)} for r in kept.to_dicts()]
    meanings = {**SELECT_REASONS, **(NOT_CHOSEN if per else {}),
                **{k: v for k, v in ROW_STATUSES.items() if k != "ok"}}
    counts = dict(table.group_by("reason").len().iter_rows())
    unknown = sorted(set(counts) - set(meanings))
    if unknown:
        raise DataError(f"{rejected}: unknown reason(s) {unknown}")
    summ = pl.DataFrame({
        "name": name, "metric": metric, "top_percent": top_percent,
        "reason": [*meanings, "total"],
        "rows": [int(counts.get(r, 0)) for r in meanings] + [table.height],
        "meaning": [*meanings.values(), "records in the data set"],
    })
    log.info("select_data %s: kept %d of %d records (%d scored pairs) by %s, top %g%%; %s", name, kept.height,
             table.height, scored.height, metric, top_percent,
             {r: n for r, n in counts.items() if r != "kept"})
    write_jsonl(conversations, selected)
    write_csv(table, decisions)
    write_csv(summ, summary)
    return table
