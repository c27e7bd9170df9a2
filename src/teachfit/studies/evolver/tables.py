"""Rules ``build_evolver_tables`` and ``plot_evolver_figures``: the evolver study's tables and figures.

Hui et al. 2024: student performance per evolver and scenario, instruction statistics per
round (difficulty, diversity, reward; drop counts of our filters), the evolver's top-1 token
probability (output space; reference code HypherX/Evolution-Analysis
``Plot_figure/plot_logprob.py``) and data selection by IC-IFD and the baselines
(``Evol_Instruct/select_data.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import DataError, read_parquet, write_csv

log = logging.getLogger(__name__)

#: keys of each ``comparison_runs`` / ``selection_runs`` entry (from ``teachfit.plan.Plan.evolver_runs``)
RUN_KEYS = ("dataset", "seedset", "scenario", "evolver", "generator", "selection", "base")
#: keys of each ``top1_rounds`` entry (from ``teachfit.plan.Plan.evolution_rounds``)
ROUND_KEYS = ("seedset", "scenario", "evolver", "round")


def _aligned(files: Sequence[str], meta: Sequence[Mapping[str, Any]], keys: Sequence[str], what: str) -> None:
    if len(files) != len(meta):
        raise DataError(f"{what}: {len(files)} files but {len(meta)} metadata entries; they must be aligned")
    for i, m in enumerate(meta):
        missing = [k for k in keys if k not in m]
        if missing:
            raise DataError(f"{what}[{i}] ({files[i]}): metadata lacks {missing}")


def _scores_row(path: str, run: Mapping[str, Any], performance: Mapping[str, Any]) -> dict[str, Any]:
    """One run's final scores: ``seedset, scenario, evolver, teacher, selection, base``, one
    ``<task>/<metric>`` column per score, and ``average`` (mean of ``performance.metrics``
    present; NaN when none is)."""
    tidy = read_parquet(path, required=["task", "metric", "value", "is_final"]).filter(pl.col("is_final"))
    row: dict[str, Any] = {"seedset": run["seedset"], "scenario": run["scenario"], "evolver": run["evolver"],
                           "teacher": run["generator"], "selection": run["selection"], "base": run["base"]}
    for r in tidy.iter_rows(named=True):
        row[f"{r['task']}/{r['metric']}"] = r["value"]
    picked = [row.get(f"{t}/{k}") for t, k in performance["metrics"].items()]
    picked = [v for v in picked if v is not None]
    row["average"] = float(np.mean(picked)) if picked else float("nan")
    return row


#: Counts of each selection run's trainset (:func:`teachfit.training.selection.select_trainset`)
#: copied into ``selection_comparison.csv``.
SELECTION_COUNT_COLUMNS = ("n_candidates", "n_dropped_empty", "n_dropped_no_score", "n_dropped_ifd_gt1",
                           "n_ranked", "n_selected", "n_truncated")


def _selection_counts(path: str) -> dict[str, int]:
    """The selection counts a trainset carries (constant columns; first row)."""
    t = read_parquet(path, required=list(SELECTION_COUNT_COLUMNS))
    if t.height == 0:
        raise DataError(f"{path}: empty trainset")
    return {c: int(t[c][0]) for c in SELECTION_COUNT_COLUMNS}


def build_evolver_tables(stats: Sequence[str], drops: Sequence[str], comparison_evals: Sequence[str],
                         selection_evals: Sequence[str], top1: Sequence[str],
                         comparison_table: str | Path, stats_table: str | Path, selection_table: str | Path,
                         top1_table: str | Path, comparison_runs: Sequence[Mapping[str, Any]],
                         selection_runs: Sequence[Mapping[str, Any]], top1_rounds: Sequence[Mapping[str, Any]],
                         performance: Mapping[str, Any],
                         selection_trainsets: Sequence[str] = ()) -> None:
    """Rule ``build_evolver_tables``: the evolver study's four CSV tables.

    Inputs: ``stats`` (``describe_instructions`` per evolved set), ``drops`` (``merge_evolved``'s
    drop tables per seed set and scenario), ``comparison_evals`` / ``selection_evals`` (tidy
    lm-eval scores of each SFT run: ``task``, ``metric``, ``value``, ``is_final``) with aligned
    ``comparison_runs`` / ``selection_runs`` (:data:`RUN_KEYS` of each run), ``selection_trainsets``
    (the trainset of each selection run, aligned with ``selection_runs``), and ``top1``
    (each round's ``top1_logprobs``, nats) with aligned ``top1_rounds`` (:data:`ROUND_KEYS`).
    ``performance``: the top-level ``performance`` config section (``metrics``: task -> metric
    averaged into ``average``).

    Writes ``comparison_table`` (one row per full-data run, sorted by seedset, scenario, base,
    evolver), ``selection_table`` (selected subsets and the full sets they come from, sorted
    by evolver, base, selection, with the trainset's :data:`SELECTION_COUNT_COLUMNS`: candidates,
    rows dropped for an empty response / no score / IFD > 1, ranked and selected rows, rows scored
    over a truncated window; empty file when there are none), ``stats_table`` (per
    evolver, scenario and round: ``n_<reason>`` drop counts, ``n_kept``, ``n_dropped``, and the
    means of length, difficulty, nearest-neighbour distance and reward of the trained
    instructions) and ``top1_table`` (:func:`teachfit.studies.evolver.diversity.top1_stats`
    per evolver, scenario and round). Raises DataError when metadata and files disagree.
    """
    from teachfit.studies.evolver.diversity import top1_stats

    _aligned(comparison_evals, comparison_runs, RUN_KEYS, "comparison_runs")
    _aligned(selection_evals, selection_runs, RUN_KEYS, "selection_runs")
    _aligned(selection_trainsets, selection_runs, RUN_KEYS, "selection_runs (trainsets)")
    _aligned(top1, top1_rounds, ROUND_KEYS, "top1_rounds")

    comparison = pl.DataFrame([_scores_row(p, r, performance) for p, r in zip(comparison_evals, comparison_runs)])
    write_csv(comparison.sort(["seedset", "scenario", "base", "evolver"]), comparison_table)

    sel_rows = [{**_scores_row(p, r, performance), **_selection_counts(t)}
                for p, t, r in zip(selection_evals, selection_trainsets, selection_runs)]
    sel = pl.DataFrame(sel_rows) if sel_rows else pl.DataFrame()
    write_csv(sel.sort(["evolver", "base", "selection"]) if sel.height else sel, selection_table)

    described = pl.concat([read_parquet(p) for p in stats], how="diagonal_relaxed")
    agg = described.group_by(["seedset", "scenario", "evolver", "round"]).agg(
        pl.len().alias("n_trained"),
        pl.col("length_words").mean().alias("length_words"),
        pl.col("difficulty").mean().alias("difficulty"),
        pl.col("nn_distance").mean().alias("diversity_nn_distance"),
        pl.col("reward").mean().alias("reward"),
    )
    dropped = pl.concat([read_parquet(p) for p in drops], how="diagonal_relaxed")
    wide = dropped.filter(pl.col("round") > 0).pivot(
        on="reason", index=["evolver", "scenario", "round"], values="count", aggregate_function="sum"
    ).fill_null(0)
    wide = wide.rename({c: f"n_{c}" if c not in ("evolver", "scenario", "round") else c for c in wide.columns})
    if "n_kept" in wide.columns:
        drop_cols = [c for c in wide.columns if c.startswith("n_") and c != "n_kept"]
        wide = wide.with_columns(pl.sum_horizontal(drop_cols).alias("n_dropped") if drop_cols
                                 else pl.lit(0).alias("n_dropped"))
    table = wide.join(agg, on=["evolver", "scenario", "round"], how="left").sort(
        ["scenario", "evolver", "round"])
    write_csv(table, stats_table)

    t1_rows = []
    for p, r in zip(top1, top1_rounds):
        t = read_parquet(p, required=["top1_logprobs"])
        s = top1_stats(t["top1_logprobs"].to_list())
        t1_rows.append({"evolver": r["evolver"], "scenario": r["scenario"], "round": int(r["round"]), **s})
    write_csv(pl.DataFrame(t1_rows) if t1_rows else pl.DataFrame(), top1_table)


def plot_evolver_figures(top1: Sequence[str], stats_table: str | Path, selection_table: str | Path,
                         top1_figure: str | Path, difficulty_figure: str | Path, selection_figure: str | Path,
                         top1_rounds: Sequence[Mapping[str, Any]], style: Mapping[str, Any]) -> None:
    """Rule ``plot_evolver_figures``: three PNG figures (``style``: ``analysis.figures``).

    ``top1_figure``: histogram + KDE of the top-1 token probability (``exp`` of each round's
    ``top1_logprobs``, pooled per evolver of the aligned ``top1_rounds``);
    ``difficulty_figure``: mean judged difficulty per round and evolver / scenario (from
    ``stats_table``); ``selection_figure``: average performance per evolver and selection
    method (from ``selection_table``; a placeholder bar when it is empty).
    """
    from teachfit import figures

    _aligned(top1, top1_rounds, ROUND_KEYS, "top1_rounds")
    fs = figures.FigureStyle.from_dict(dict(style))
    samples: dict[str, list[float]] = {}
    for p, r in zip(top1, top1_rounds):
        t = read_parquet(p, required=["top1_logprobs"])
        vals = [float(np.exp(v)) for row in t["top1_logprobs"].to_list() for v in (row or [])]
        samples.setdefault(r["evolver"], []).extend(vals)
    figures.hist_kde(samples, Path(top1_figure).with_suffix(""),
                     title="Evolver top-1 token probability (greedy)", xlabel="top-1 probability", style=fs)
    table = pl.read_csv(stats_table)
    table = table.with_columns((pl.col("evolver") + " / " + pl.col("scenario")).alias("series"))
    figures.line_curves(table.filter(pl.col("difficulty").is_not_null()), x="round", y="difficulty",
                        group="series", path_stem=Path(difficulty_figure).with_suffix(""),
                        title="Judged difficulty of evolved instructions per round", style=fs)
    sel = pl.read_csv(selection_table) if Path(selection_table).stat().st_size > 1 else pl.DataFrame()
    if sel.height:
        sel = sel.with_columns((pl.col("evolver") + ": " + pl.col("selection")).alias("label"))
        figures.bar(sel, x="label", y="average", path_stem=Path(selection_figure).with_suffix(""),
                    title="Average performance by data selection method", style=fs)
    else:
        figures.bar(pl.DataFrame({"label": ["(no selection runs)"], "average": [0.0]}), x="label",
                    y="average", path_stem=Path(selection_figure).with_suffix(""),
                    title="Selection comparison not activated", style=fs)
