"""Rules ``merge_evolved`` and ``split_evolved``: the kept evolutions per evolver, equalized in size.

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

from teachfit.io import DataError, content_id, read_parquet, write_parquet

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


def merge_evolved(rounds: Sequence[str], round_drops: Sequence[str], merged: str | Path, drops: str | Path,
                  round_info: Sequence[Mapping[str, Any]], evolvers: Sequence[str], equalize: bool,
                  use_rounds: str, seed: int) -> pl.DataFrame:
    """Rule ``merge_evolved``: per evolver, the kept evolutions of all (or the last) rounds of
    one scenario, down-sampled to a common size across evolvers (:func:`equalize_sizes`).

    ``rounds``: one Parquet per (evolver, round) (the kept rows of ``evolve_instructions`` /
    ``evolve_autoif``); ``round_drops``: their JSON drop reports, aligned; ``round_info``:
    aligned ``{"seedset", "scenario", "evolver", "round"}`` of each file (from the plan, never
    parsed from the path). ``evolvers``: the scenario's evolvers (their order is the merged
    table's order); ``equalize`` / ``use_rounds`` (all | last) / ``seed``: ``evolver.equalize``,
    ``evolver.use_rounds``, the run seed.

    Writes ``merged`` (every kept row plus ``evolver``) and ``drops`` (long table ``evolver``,
    ``scenario``, ``round``, ``reason``, ``count``: each round's kept and dropped counts, and a
    ``round 0`` row ``equalized_away`` per evolver). Raises DataError when the inputs are not
    aligned or an evolver kept nothing (after writing ``drops``, so the reasons can be read).
    """
    if not (len(rounds) == len(round_drops) == len(round_info)):
        raise DataError(f"merge_evolved: {len(rounds)} round files, {len(round_drops)} drop reports and "
                        f"{len(round_info)} round_info entries; they must be aligned")
    unknown = sorted({str(m["evolver"]) for m in round_info} - set(evolvers))
    if unknown:
        raise DataError(f"merge_evolved: round files of evolver(s) {unknown} not in evolvers {list(evolvers)}")
    by_ev: dict[str, list[tuple[int, pl.DataFrame]]] = {ev: [] for ev in evolvers}
    for path, meta in zip(rounds, round_info):
        by_ev[meta["evolver"]].append((int(meta["round"]), read_parquet(path)))
    sets: dict[str, pl.DataFrame] = {}
    for ev, per_round in by_ev.items():
        per_round.sort(key=lambda t: t[0])
        chosen = per_round[-1:] if use_rounds == "last" else per_round
        frames = [df for _, df in chosen if df.height]
        sets[ev] = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(
            schema={"id": pl.String, "instruction": pl.String, "root_id": pl.String})
    sizes = {ev: df.height for ev, df in sets.items()}
    if equalize:
        sets = equalize_sizes(sets, seed=seed)
    rows = []
    for p in round_drops:
        rep = json.loads(Path(p).read_text())
        rows.append({"evolver": rep["evolver"], "scenario": rep["scenario"], "round": int(rep["round"]),
                     "reason": "kept", "count": int(rep["kept"])})
        rows += [{"evolver": rep["evolver"], "scenario": rep["scenario"], "round": int(rep["round"]),
                  "reason": str(r), "count": int(n)} for r, n in rep["dropped"].items()]
    for ev in evolvers:
        rows.append({"evolver": ev, "scenario": rows[0]["scenario"] if rows else "", "round": 0,
                     "reason": "equalized_away", "count": sizes[ev] - sets[ev].height})
    write_parquet(pl.DataFrame(rows), drops)
    for ev in evolvers:
        if sets[ev].height == 0:
            raise DataError(
                f"{merged}: evolver {ev!r} kept no evolutions (sizes before equalizing: {sizes}); "
                f"see {drops} for the drop reasons, or run this scenario with other evolvers "
                f"(evolver.scenarios.<scenario>.evolvers)")
        log.info("%s: %d instructions (before equalizing: %d)", ev, sets[ev].height, sizes[ev])
    table = pl.concat([sets[ev].with_columns(pl.lit(ev).alias("evolver")) for ev in evolvers],
                      how="diagonal_relaxed")
    write_parquet(table, merged)
    return table


def split_evolved(merged: str | Path, instructions: str | Path, evolver: str) -> pl.DataFrame:
    """Rule ``split_evolved``: the rows of one ``evolver`` from ``merged`` (``merge_evolved``'s
    table) written to ``instructions``, the evolved data set the teacher answers. Raises
    DataError when the evolver has no rows."""
    df = read_parquet(merged, required=["id", "instruction", "evolver"]).filter(
        pl.col("evolver") == evolver)
    if df.height == 0:
        raise DataError(f"{merged}: no rows for evolver {evolver!r}")
    write_parquet(df, instructions)
    return df
