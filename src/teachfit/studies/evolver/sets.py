"""Rules ``pool_evolved``, ``merge_evolved`` and ``split_evolved``: the valid evolutions per evolver,
answered once, ranked and equalized in size.

Hui et al. 2024 compare evolvers on instruction sets of the same size, so that a better
student reflects better instructions, not more of them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.io import DataError, content_id, read_parquet, write_json, write_parquet

log = logging.getLogger(__name__)


def equalize_sizes(dfs_by_evolver: Mapping[str, pl.DataFrame], seed: int) -> dict[str, pl.DataFrame]:
    """Down-sample every evolver's set to the smallest set's size, sharing root ids where possible.

    Rows whose ``root_id`` (or ``id`` when there is no ``root_id``) occurs in
    *every* set come first, in one seeded order of those shared roots, so that
    all evolvers keep rows evolved from the same seeds as far as the sizes
    allow; the remaining slots are filled from each set's other rows in a
    seeded order. Ties break by ``id``. Each result is sorted by ``id`` and
    has the input's columns.
    """
    if not dfs_by_evolver:
        return {}
    for name, df in dfs_by_evolver.items():
        if "id" not in df.columns:
            raise DataError(f"equalize_sizes: set {name!r} has no 'id' column")
    n = min(df.height for df in dfs_by_evolver.values())

    def roots(df: pl.DataFrame) -> list[str]:
        return (df["root_id"] if "root_id" in df.columns else df["id"]).to_list()

    shared = set.intersection(*(set(roots(df)) for df in dfs_by_evolver.values()))
    order = {r: content_id("equalize-root", seed, r) for r in shared}
    out: dict[str, pl.DataFrame] = {}
    for name, df in dfs_by_evolver.items():
        keys = [
            (0, order[r], i) if r in order else (1, content_id("equalize-row", seed, i), i)
            for r, i in zip(roots(df), df["id"].to_list())
        ]
        picked = sorted(range(df.height), key=keys.__getitem__)[:n]
        out[name] = (
            df.with_row_index("_row").filter(pl.col("_row").is_in(picked)).drop("_row").sort("id")
        )
    return out


def pool_evolved(rounds: Sequence[str], instructions: str | Path, summary: str | Path,
                 round_info: Sequence[Mapping[str, Any]], evolver: str, scenario: str, use_rounds: str) -> pl.DataFrame:
    """Rule ``pool_evolved`` (a checkpoint): one evolver's valid instructions of one scenario, the
    set the teacher answers before the response checks and the equal-size sets.

    ``rounds``: the valid instructions of each round (``gate_instructions``, or ``evolve_autoif``
    for AutoIF), with aligned ``round_info`` (``{"seedset", "scenario", "evolver", "round"}`` from
    the plan). ``use_rounds``: ``evolver.use_rounds`` (all | last). Writes ``instructions`` (the
    pooled rows, with ``round``) and ``summary`` (JSON: ``evolver``, ``scenario``, ``rows``, rows
    per round). A pool may be empty (every reply dropped): the workflow then answers nothing
    and the evolver is not ranked (:func:`merge_evolved`). Raises DataError when the metadata
    is not aligned or names another evolver, or when ids repeat.
    """
    if len(rounds) != len(round_info):
        raise DataError(f"pool_evolved: {len(rounds)} round files but {len(round_info)} round_info entries")
    others = sorted({str(m["evolver"]) for m in round_info} - {evolver})
    if others:
        raise DataError(f"pool_evolved({evolver}): round files of other evolvers {others}")
    per_round = sorted(((int(m["round"]), read_parquet(p, required=["id", "instruction"]))
                        for p, m in zip(rounds, round_info)), key=lambda t: t[0])
    chosen = per_round[-1:] if use_rounds == "last" else per_round
    frames = [df.with_columns(pl.lit(k, dtype=pl.Int64).alias("round")) if "round" not in df.columns else df
              for k, df in chosen if df.height]
    pool = (pl.concat(frames, how="diagonal_relaxed") if frames
            else pl.DataFrame(schema={"id": pl.String, "instruction": pl.String, "root_id": pl.String,
                                      "round": pl.Int64}))
    if pool["id"].n_unique() != pool.height:
        raise DataError(f"{instructions}: repeated ids across the rounds of {evolver} / {scenario}")
    counts = {str(k): int(df.height) for k, df in chosen}
    log.info("%s / %s: pool of %d valid instructions (rounds used: %s)", evolver, scenario, pool.height, counts)
    write_json({"evolver": evolver, "scenario": scenario, "rows": pool.height, "rounds": counts,
                "use_rounds": use_rounds}, summary)
    write_parquet(pool, instructions)
    return pool


#: keys of one entry of ``merge_evolved``'s ``ranking`` JSON ``evolvers`` list
RANKING_KEYS = ("evolver", "valid", "ranked")


def merge_evolved(answered: Sequence[str], answered_drops: Sequence[str], pools: Sequence[str],
                  round_drops: Sequence[str], merged: str | Path, drops: str | Path, ranking: str | Path,
                  answered_evolvers: Sequence[str], evolvers: Sequence[str], round_info: Sequence[Mapping[str, Any]],
                  equalize: bool, min_valid: int, seed: int) -> pl.DataFrame:
    """Rule ``merge_evolved`` (a checkpoint): rank the evolvers of one scenario on their valid
    sets and build the equal-size sets of the ranked ones (:func:`equalize_sizes`).

    Inputs: ``answered`` / ``answered_drops`` (``gate_responses``' valid answered rows and its
    JSON report) of the ``answered_evolvers`` (aligned; the evolvers whose pool held at least
    ``min_valid`` instructions, so the teacher answered it); ``pools`` (``pool_evolved``'s JSON
    summary of every evolver of ``evolvers``, aligned); ``round_drops`` (``gate_instructions``'
    JSON per round, aligned with ``round_info``). Params: ``equalize``, ``min_valid``
    (``evolver.min_valid``), ``seed``.

    An evolver is ranked when at least ``min_valid`` of its instructions pass every check;
    the others are not equalized with the ranked ones (a near-empty set would shrink every
    set to its size) and get no SFT runs: the study reports them as not ranked.

    Writes ``merged`` (the ranked evolvers' equal-size rows with their responses, plus
    ``evolver``; possibly empty), ``drops`` (long table ``evolver``, ``scenario``, ``round``,
    ``reason``, ``count``: ``replies`` per round, every drop reason of both gates, ``valid``,
    ``kept`` (in the equal-size set), ``equalized_away``, ``unused_round`` (valid, but
    ``evolver.use_rounds`` is last) and ``unranked``; per round ``valid = kept + equalized_away +
    unused_round + unranked``) and ``ranking`` (JSON: ``min_valid``, ``ranked``, and per evolver
    :data:`RANKING_KEYS`). Raises DataError when the inputs are not aligned.
    """
    if not (len(answered) == len(answered_drops) == len(answered_evolvers)):
        raise DataError(f"merge_evolved: {len(answered)} answered sets, {len(answered_drops)} response reports "
                        f"and {len(answered_evolvers)} answered_evolvers; they must be aligned")
    if len(pools) != len(evolvers):
        raise DataError(f"merge_evolved: {len(pools)} pool summaries for {len(evolvers)} evolvers")
    if len(round_drops) != len(round_info):
        raise DataError(f"merge_evolved: {len(round_drops)} round reports but {len(round_info)} round_info entries")
    unknown = sorted(({str(m["evolver"]) for m in round_info} | set(answered_evolvers)) - set(evolvers))
    if unknown:
        raise DataError(f"merge_evolved: evolver(s) {unknown} not in evolvers {list(evolvers)}")
    pool_rows = {}
    for ev, p in zip(evolvers, pools):
        summary = json.loads(Path(p).read_text())
        if summary["evolver"] != ev:
            raise DataError(f"{p}: pool summary of {summary['evolver']!r}, expected {ev!r}")
        pool_rows[ev] = (int(summary["rows"]), {int(k) for k in summary["rounds"]})
    sets: dict[str, pl.DataFrame] = {}
    response_reports: dict[str, Any] = {}
    for ev, p, rep in zip(answered_evolvers, answered, answered_drops):
        sets[ev] = read_parquet(p, required=["id", "instruction", "response", "round"])
        response_reports[ev] = json.loads(Path(rep).read_text())
    valid = {ev: sets[ev].height if ev in sets else pool_rows[ev][0] for ev in evolvers}
    ranked = [ev for ev in evolvers if ev in sets and valid[ev] >= min_valid]
    for ev in evolvers:
        if ev not in ranked:
            log.warning("%s: only %d valid instructions (< evolver.min_valid = %d): not ranked, no SFT runs",
                        ev, valid[ev], min_valid)
    chosen = {ev: sets[ev] for ev in ranked}
    if equalize and chosen:
        chosen = equalize_sizes(chosen, seed=seed)

    rows: list[dict[str, Any]] = []
    scenario = ""

    def add(ev: str, rnd: int, reason: str, count: int) -> None:
        rows.append({"evolver": ev, "scenario": scenario, "round": rnd, "reason": reason, "count": int(count)})

    instruction_valid: dict[tuple[str, int], int] = {}
    for p, meta in zip(round_drops, round_info):
        rep = json.loads(Path(p).read_text())
        scenario = str(rep["scenario"])
        ev, rnd = str(meta["evolver"]), int(meta["round"])
        add(ev, rnd, "replies", rep["input_rows"])
        for reason, n in rep["dropped"].items():
            add(ev, rnd, str(reason), n)
        instruction_valid[(ev, rnd)] = int(rep["kept"])
    for (ev, rnd), n_valid in instruction_valid.items():
        in_pool = rnd in pool_rows[ev][1]
        lost = 0
        for entry in response_reports.get(ev, {}).get("rounds", []):
            if int(entry["round"]) == rnd:
                for reason, n in entry["dropped"].items():
                    add(ev, rnd, str(reason), n)
                    lost += int(n)
        n_valid -= lost
        add(ev, rnd, "valid", n_valid)
        kept = int((chosen[ev]["round"] == rnd).sum()) if ev in chosen else 0
        add(ev, rnd, "kept", kept)
        add(ev, rnd, "equalized_away", n_valid - kept if ev in chosen else 0)
        add(ev, rnd, "unused_round", 0 if in_pool else n_valid)
        add(ev, rnd, "unranked", n_valid if in_pool and ev not in chosen else 0)
    write_parquet(pl.DataFrame(rows, schema={"evolver": pl.String, "scenario": pl.String, "round": pl.Int64,
                                             "reason": pl.String, "count": pl.Int64}), drops)
    write_json({"min_valid": int(min_valid), "ranked": ranked,
                "evolvers": [{"evolver": ev, "valid": int(valid[ev]), "ranked": ev in ranked} for ev in evolvers]},
               ranking)
    for ev, df in chosen.items():
        log.info("%s: %d instructions (before equalizing: %d)", ev, df.height, valid[ev])
    table = (pl.concat([chosen[ev].with_columns(pl.lit(ev).alias("evolver")) for ev in ranked],
                       how="diagonal_relaxed") if ranked
             else pl.DataFrame(schema={"id": pl.String, "instruction": pl.String, "response": pl.String,
                                       "round": pl.Int64, "evolver": pl.String}))
    write_parquet(table, merged)
    return table


def split_evolved(merged: str | Path, pool: str | Path, instructions: str | Path, responses: str | Path,
                  evolver: str) -> pl.DataFrame:
    """Rule ``split_evolved``: the rows of one ranked ``evolver`` from ``merged``
    (``merge_evolved``'s table), written as the evolved data set the students train on:
    ``instructions`` (the columns of the evolver's ``pool``, ``pool_evolved``'s table) and
    ``responses`` (the whole rows: the teacher's responses as ``select_responses`` wrote them,
    so the set is not answered again). Raises DataError when the evolver has no rows (it was
    not ranked)."""
    df = read_parquet(merged, required=["id", "instruction", "evolver", "response"]).filter(
        pl.col("evolver") == evolver)
    if df.height == 0:
        raise DataError(f"{merged}: no rows for evolver {evolver!r} (not ranked: see the ranking file beside it)")
    columns = read_parquet(pool).columns
    write_parquet(df.select([c for c in columns if c in df.columns]), instructions)
    write_parquet(df, responses)
    return df
