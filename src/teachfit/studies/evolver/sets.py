"""Rules ``merge_evolved`` and ``split_evolved``: the kept evolutions per evolver, equalized in size.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from pathlib import Path

import polars as pl

from teachfit.io import (
    DataError,
    content_id,
    read_parquet,
    write_parquet,
)

log = logging.getLogger(__name__)



ROUND_RE = re.compile(
    r"results/evolved/(?P<seedset>[^/]+)/(?P<evolver>[^/]+)/(?P<scenario>[^/]+)/round(?P<k>\d+)\.parquet$")


def equalize_sizes(dfs_by_evolver: Mapping[str, pl.DataFrame], seed: int = 0) -> dict[str, pl.DataFrame]:
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


def merge_evolved(round_paths: list[str], drops_paths: list[str], merged_path: str | Path,
                  drops_out: str | Path, evolvers: list[str], equalize: bool, use_rounds: str,
                  seed: int) -> pl.DataFrame:
    """Per evolver: the kept evolutions of all (or the last) rounds; equalized across evolvers."""

    by_ev: dict[str, list[tuple[int, pl.DataFrame]]] = {ev: [] for ev in evolvers}
    for p in round_paths:
        m = ROUND_RE.search(str(p))
        if not m:
            raise DataError(f"{p}: not a results/evolved/<seedset>/<evolver>/<scenario>/round<k>.parquet path")
        by_ev[m["evolver"]].append((int(m["k"]), read_parquet(p)))
    sets: dict[str, pl.DataFrame] = {}
    for ev, rounds in by_ev.items():
        rounds.sort(key=lambda t: t[0])
        chosen = rounds[-1:] if use_rounds == "last" else rounds
        frames = [df for _, df in chosen if df.height]
        sets[ev] = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame(
            schema={"id": pl.String, "instruction": pl.String, "root_id": pl.String})
    sizes = {ev: df.height for ev, df in sets.items()}
    if equalize:
        sets = equalize_sizes(sets, seed=seed)
    rows = []
    for p in drops_paths:
        rep = json.loads(Path(p).read_text())
        rows.append({"evolver": rep["evolver"], "scenario": rep["scenario"], "round": int(rep["round"]),
                     "reason": "kept", "count": int(rep["kept"])})
        rows += [{"evolver": rep["evolver"], "scenario": rep["scenario"], "round": int(rep["round"]),
                  "reason": str(r), "count": int(n)} for r, n in rep["dropped"].items()]
    for ev in evolvers:
        rows.append({"evolver": ev, "scenario": rows[0]["scenario"] if rows else "", "round": 0,
                     "reason": "equalized_away", "count": sizes[ev] - sets[ev].height})
    write_parquet(pl.DataFrame(rows), drops_out)
    for ev in evolvers:
        if sets[ev].height == 0:
            raise DataError(
                f"{merged_path}: evolver {ev!r} kept no evolutions (sizes before equalizing: {sizes}); "
                f"see {drops_out} for the drop reasons, or run this scenario with other evolvers "
                f"(evolver.scenarios.<scenario>.evolvers)")
        log.info("%s: %d instructions (before equalizing: %d)", ev, sets[ev].height, sizes[ev])
    merged = pl.concat([sets[ev].with_columns(pl.lit(ev).alias("evolver")) for ev in evolvers],
                       how="diagonal_relaxed")
    write_parquet(merged, merged_path)
    return merged


def split_evolved(merged_path: str | Path, out_path: str | Path, evolver: str) -> pl.DataFrame:
    df = read_parquet(merged_path, required=["id", "instruction", "evolver"]).filter(
        pl.col("evolver") == evolver)
    if df.height == 0:
        raise DataError(f"{merged_path}: no rows for evolver {evolver!r}")
    write_parquet(df, out_path)
    return df
