"""Rules ``build_evolver_tables`` and ``plot_evolver_figures``: the evolver study's tables and figures.

Hui et al. 2024: student performance per ranked evolver and scenario, instruction statistics per
round (the validity gate's counts per reason, kept / valid / ranked; difficulty, diversity,
reward), the evolver's top-1 token probability (output space; reference code
HypherX/Evolution-Analysis ``Plot_figure/plot_logprob.py``) and data selection by IC-IFD and the
baselines (``Evol_Instruct/select_data.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit import figures
from teachfit.io import DataError, read_json, read_parquet, write_csv
from teachfit.studies.evolver.diversity import top1_kde, top1_probabilities, top1_stats
from teachfit.studies.evolver.gate_checks import REASONS

log = logging.getLogger(__name__)

#: keys of each ``comparison_runs`` / ``selection_runs`` entry (from ``teachfit.workflow.plan.Plan.evolver_runs``)
RUN_KEYS = ("dataset", "seedset", "scenario", "evolver", "generator", "selection", "base")
#: keys of each ``top1_rounds`` entry (from ``teachfit.workflow.plan.Plan.evolution_rounds``)
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


#: order of the count columns of ``evolved_instruction_stats.csv`` (reasons other scenarios report,
#: such as AutoIF's ``<step>:<reason>``, follow the gate's reasons)
COUNT_ORDER = ("replies",)
ACCOUNT_ORDER = ("valid", "kept", "equalized_away", "unused_round", "unranked")


def _empty_runs_table() -> pl.DataFrame:
    schema = {k: pl.String for k in ("seedset", "scenario", "evolver", "teacher", "selection", "base")}
    return pl.DataFrame(schema={**schema, "average": pl.Float64})


def gate_stats(drops: pl.DataFrame, rankings: Mapping[tuple[str, str], Mapping[str, Any]]) -> pl.DataFrame:
    """Per seed set, scenario, evolver and round: ``ranked``, ``status`` and the counts of
    ``merge_evolved``'s drop table, wide: ``n_replies``, ``n_<reason>`` for every drop reason (the
    gate's, :data:`teachfit.studies.evolver.gate_checks.REASONS`, then any other), ``n_dropped`` (their
    sum), ``n_valid``, ``n_kept``, ``n_equalized_away``, ``n_unused_round``, ``n_unranked``.

    ``rankings``: ``(seedset, scenario) -> ranking JSON`` of ``merge_evolved``; ``status`` is
    ``ranked`` or ``not ranked: <valid> valid < evolver.min_valid <m>``.
    """
    keys = ["seedset", "scenario", "evolver", "round"]
    present = drops["reason"].unique().to_list()
    reasons = [r for r in REASONS if r in present] + sorted(
        r for r in present if r not in REASONS and r not in COUNT_ORDER and r not in ACCOUNT_ORDER)
    wide = drops.pivot(on="reason", index=keys, values="count", aggregate_function="sum")
    for r in (*COUNT_ORDER, *reasons, *ACCOUNT_ORDER):
        if r not in wide.columns:
            wide = wide.with_columns(pl.lit(0, dtype=pl.Int64).alias(r))
    wide = wide.with_columns(pl.col([*COUNT_ORDER, *reasons, *ACCOUNT_ORDER]).fill_null(0))
    wide = wide.with_columns((pl.sum_horizontal(reasons) if reasons else pl.lit(0, dtype=pl.Int64)).alias("dropped"))
    status, ranked = [], []
    for s, sc, ev in wide.select("seedset", "scenario", "evolver").iter_rows():
        rank = rankings.get((s, sc))
        entry = next((e for e in (rank or {}).get("evolvers", []) if e["evolver"] == ev), None)
        if entry is None:
            raise DataError(f"no ranking of evolver {ev!r} for seed set {s!r}, scenario {sc!r}")
        ranked.append(bool(entry["ranked"]))
        status.append("ranked" if entry["ranked"] else
                      f"not ranked: {entry['valid']} valid < evolver.min_valid {rank['min_valid']}")
    ordered = [*COUNT_ORDER, *reasons, "dropped", *ACCOUNT_ORDER]
    return wide.with_columns(pl.Series("ranked", ranked, dtype=pl.Boolean), pl.Series("status", status)).select(
        *keys, "ranked", "status", *[pl.col(c).alias(f"n_{c}") for c in ordered]).sort(keys)


def build_evolver_tables(stats: Sequence[str], drops: Sequence[str], rankings: Sequence[str],
                         comparison_evals: Sequence[str], selection_evals: Sequence[str], top1: Sequence[str],
                         comparison_table: str | Path, stats_table: str | Path, selection_table: str | Path,
                         top1_table: str | Path, drop_sets: Sequence[Mapping[str, Any]],
                         comparison_runs: Sequence[Mapping[str, Any]],
                         selection_runs: Sequence[Mapping[str, Any]], top1_rounds: Sequence[Mapping[str, Any]],
                         performance: Mapping[str, Any],
                         selection_trainsets: Sequence[str] = ()) -> None:
    """Rule ``build_evolver_tables``: the evolver study's four CSV tables.

    Inputs: ``stats`` (``describe_instructions`` per evolved set of a ranked evolver),
    ``drops`` and ``rankings`` (``merge_evolved``'s drop table and ranking JSON per seed set and
    scenario, aligned with ``drop_sets``: ``{"seedset", "scenario"}`` each),
    ``comparison_evals`` / ``selection_evals`` (tidy lm-eval scores of each SFT run: ``task``,
    ``metric``, ``value``, ``is_final``) with aligned ``comparison_runs`` / ``selection_runs``
    (:data:`RUN_KEYS` of each run; ranked evolvers only), ``selection_trainsets`` (the trainset of
    each selection run, aligned with ``selection_runs``), and ``top1`` (each round's
    ``top1_logprobs`` and ``first_top1_logprobs``, nats) with aligned ``top1_rounds``
    (:data:`ROUND_KEYS`). ``performance``: the top-level ``performance`` config section
    (``metrics``: task -> metric averaged into ``average``).

    Writes ``comparison_table`` (one row per full-data run, sorted by seedset, scenario, base,
    evolver; header only when no evolver was ranked), ``selection_table`` (selected subsets and
    the full sets they come from, sorted by evolver, base, selection, with the trainset's
    :data:`SELECTION_COUNT_COLUMNS`: candidates, rows dropped for an empty response / no score /
    IFD > 1, ranked and selected rows, rows scored over a truncated window; empty file when there
    are none), ``stats_table`` (:func:`gate_stats` per seed set, scenario, evolver and round, plus
    the means of length, difficulty, nearest-neighbour distance and reward of the trained
    instructions, null for an evolver that was not ranked) and ``top1_table`` (per evolver,
    scenario and round: :func:`teachfit.studies.evolver.diversity.top1_stats` of every
    generated token of the sampled evolution replies (``n_tokens``, ``mean``, ...) and, as
    ``first_*``, of the first min(len, 5) greedy tokens, the paper's output-space statistic).
    Raises DataError when metadata and files disagree.
    """
    _aligned(comparison_evals, comparison_runs, RUN_KEYS, "comparison_runs")
    _aligned(selection_evals, selection_runs, RUN_KEYS, "selection_runs")
    _aligned(selection_trainsets, selection_runs, RUN_KEYS, "selection_runs (trainsets)")
    _aligned(top1, top1_rounds, ROUND_KEYS, "top1_rounds")
    _aligned(drops, drop_sets, ("seedset", "scenario"), "drop_sets")
    if len(rankings) != len(drops):
        raise DataError(f"build_evolver_tables: {len(rankings)} ranking files for {len(drops)} drop tables")

    comp_rows = [_scores_row(p, r, performance) for p, r in zip(comparison_evals, comparison_runs)]
    comparison = pl.DataFrame(comp_rows) if comp_rows else _empty_runs_table()
    write_csv(comparison.sort(["seedset", "scenario", "base", "evolver"]), comparison_table)

    sel_rows = [{**_scores_row(p, r, performance), **_selection_counts(t)}
                for p, t, r in zip(selection_evals, selection_trainsets, selection_runs)]
    sel = pl.DataFrame(sel_rows) if sel_rows else pl.DataFrame()
    write_csv(sel.sort(["evolver", "base", "selection"]) if sel.height else sel, selection_table)

    rank = {(m["seedset"], m["scenario"]): read_json(p) for p, m in zip(rankings, drop_sets)}
    dropped = pl.concat([read_parquet(p, required=["evolver", "scenario", "round", "reason", "count"])
                         .with_columns(pl.lit(m["seedset"]).alias("seedset"))
                         for p, m in zip(drops, drop_sets)], how="diagonal_relaxed")
    table = gate_stats(dropped, rank)
    if stats:
        described = pl.concat([read_parquet(p) for p in stats], how="diagonal_relaxed")
        agg = described.group_by(["seedset", "scenario", "evolver", "round"]).agg(
            pl.col("length_words").mean().alias("length_words"),
            pl.col("difficulty").mean().alias("difficulty"),
            pl.col("nn_distance").mean().alias("diversity_nn_distance"),
            pl.col("reward").mean().alias("reward"),
        ).with_columns(pl.col("round").cast(pl.Int64))
        table = table.join(agg, on=["seedset", "scenario", "evolver", "round"], how="left")
    else:
        table = table.with_columns([pl.lit(None, dtype=pl.Float64).alias(c)
                                    for c in ("length_words", "difficulty", "diversity_nn_distance", "reward")])
    for row in table.filter(~pl.col("ranked")).select("seedset", "scenario", "evolver", "status").unique(
            maintain_order=True).iter_rows():
        log.warning("evolver study: %s / %s / %s %s", *row)
    write_csv(table, stats_table)

    t1_rows = []
    for p, r in zip(top1, top1_rounds):
        t = read_parquet(p, required=["top1_logprobs", "first_top1_logprobs"])
        s = top1_stats(t["top1_logprobs"].to_list())
        first = top1_stats(t["first_top1_logprobs"].to_list())
        t1_rows.append({"evolver": r["evolver"], "scenario": r["scenario"], "round": int(r["round"]), **s,
                        **{f"first_{k}": v for k, v in first.items()}})
    write_csv(pl.DataFrame(t1_rows) if t1_rows else pl.DataFrame(), top1_table)


#: the parts of one bar of the gate figure, in order
GATE_FIGURE_PARTS = ("kept", "equalized_away", "unused_round", "unranked")


def plot_evolver_figures(top1: Sequence[str], stats_table: str | Path, selection_table: str | Path,
                         top1_figure: str | Path, difficulty_figure: str | Path, selection_figure: str | Path,
                         gate_figure: str | Path, top1_rounds: Sequence[Mapping[str, Any]],
                         style: Mapping[str, Any]) -> None:
    """Rule ``plot_evolver_figures``: four PNG figures (``style``: ``analysis.figures``).

    ``top1_figure``: the output-space figure as the paper draws it (HypherX/Evolution-Analysis
    ``Plot_figure/plot_logprob.py``): per evolver, the top-1 probabilities of the first
    min(len, 5) greedy tokens of every reply (``first_top1_logprobs`` of the aligned
    ``top1_rounds``, pooled over its rounds and scenarios) as a Scott's-rule Gaussian KDE on
    [0, 0.99] (:func:`teachfit.studies.evolver.diversity.top1_kde`), x axis inverted;
    ``difficulty_figure``: mean judged difficulty per round and evolver / scenario (from
    ``stats_table``; ranked evolvers only); ``selection_figure``: average performance per
    evolver and selection method (from ``selection_table``; a placeholder bar when it is
    empty); ``gate_figure``: per evolver, scenario and round, the replies split into kept,
    equalized away, unused, unranked and each drop reason (from ``stats_table``).
    """
    _aligned(top1, top1_rounds, ROUND_KEYS, "top1_rounds")
    fs = figures.FigureStyle.from_dict(dict(style))
    samples: dict[str, list[list[float]]] = {}
    for p, r in zip(top1, top1_rounds):
        t = read_parquet(p, required=["first_top1_logprobs"])
        samples.setdefault(r["evolver"], []).extend(t["first_top1_logprobs"].to_list())
    curves, notes = {}, {}
    for ev, seqs in samples.items():
        probs = top1_probabilities(seqs)
        curves[ev] = top1_kde(probs)
        notes[ev] = f"n={probs.size} tokens" if curves[ev][1] is not None else f"n={probs.size}: too few for a KDE"
    figures.density_curves(curves, Path(top1_figure).with_suffix(""), notes=notes, invert_x=True,
                           title="Evolver output space: top-1 probability of the first 5 greedy tokens",
                           xlabel="top-1 token probability", style=fs)
    table = pl.read_csv(stats_table)
    table = table.with_columns((pl.col("evolver") + " / " + pl.col("scenario")).alias("series"))
    figures.line_curves(table.filter(pl.col("difficulty").is_not_null()), x="round", y="difficulty",
                        group="series", path_stem=Path(difficulty_figure).with_suffix(""),
                        title="Judged difficulty of evolved instructions per round", style=fs)
    bars = table.with_columns((pl.col("series") + " r" + pl.col("round").cast(pl.String)).alias("label"))
    parts = [f"n_{c}" for c in GATE_FIGURE_PARTS] + [c for c in bars.columns if c.startswith("n_")
                                                     and c[2:] in REASONS]
    parts += [c for c in bars.columns if c.startswith("n_") and c not in parts
              and c not in ("n_replies", "n_dropped", "n_valid")]
    figures.stacked_bars(bars.rename({c: c[2:] for c in parts}), label="label", parts=[c[2:] for c in parts],
                         path_stem=Path(gate_figure).with_suffix(""), xlabel="evolution replies",
                         title="Evolution replies: kept, valid but not trained, and dropped by reason", style=fs)
    sel = pl.read_csv(selection_table) if Path(selection_table).stat().st_size > 1 else pl.DataFrame()
    if sel.height:
        sel = sel.with_columns((pl.col("evolver") + ": " + pl.col("selection")).alias("label"))
        figures.bar(sel, x="label", y="average", path_stem=Path(selection_figure).with_suffix(""),
                    title="Average performance by data selection method", style=fs)
    else:
        figures.bar(pl.DataFrame({"label": ["(no selection runs)"], "average": [0.0]}), x="label",
                    y="average", path_stem=Path(selection_figure).with_suffix(""),
                    title="Selection comparison not activated", style=fs)
