"""Training sets: full data or the top-k% by a selection metric (IC-IFD, IFD, instruction PPL,
length, random); :func:`select_trainset` is the rule, :func:`select_top` the ranking."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.io import DataError, content_id, read_parquet, write_parquet

log = logging.getLogger(__name__)


def add_selection_metrics(df: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    """Join per-pair losses and derive IC-IFD, IFD, instruction PPL and response length."""
    from teachfit.scoring.metrics import ic_ifd, ifd, ppl

    s = scores.select("id", "loss_q", "loss_a_given_q", "loss_a", "n_a_tokens")
    out = df.join(s, on="id", how="left", validate="1:1")
    return out.with_columns(
        pl.Series("icifd", ic_ifd(out["loss_a_given_q"].to_numpy(), out["loss_q"].to_numpy(),
                                  out["loss_a"].to_numpy())),
        pl.Series("ifd", ifd(out["loss_a_given_q"].to_numpy(), out["loss_a"].to_numpy())),
        pl.Series("instruction_ppl", ppl(out["loss_q"].to_numpy())),
        pl.col("n_a_tokens").cast(pl.Float64).alias("response_length"),
    )


def select_trainset(responses: str | Path, scores: list[str], trainset: str | Path,
                    selection: Mapping[str, Any], label: str) -> pl.DataFrame:
    """A training set: every response, or the top-k% by a selection metric; rule ``select_trainset``.

    ``responses``: Parquet ``id``, ``instruction``, ``response`` (one generator's kept
    responses); rows with an empty response are dropped (logged, counted in
    ``n_dropped_empty``). ``scores``: none (``full``, ``length``, ``random``) or the one scores
    file of the selection's scorer (Parquet ``id``, ``loss_q``, ``loss_a_given_q``, ``loss_a``
    (nats), ``n_a_tokens``), joined on ``id`` by :func:`add_selection_metrics`. ``selection``:
    keyword arguments of :func:`select_top` (``method``, ``top_percent``, ``seed``); ``label``:
    the selection's name (e.g. ``ifd50``), stored as ``selection_label``.

    Writes ``trainset`` (Parquet, the kept rows in selection order plus ``selection``,
    ``selection_percent``, ``selection_rank``, ``selection_label``, ``n_dropped_empty``).
    Raises :class:`DataError` naming the file when an input is unreadable, lacks a column, or
    every response is empty; ``ValueError`` for more than one scores file.
    """
    df = read_parquet(responses, required=["id", "instruction", "response"])
    empty = df.filter(pl.col("response").is_null() | (pl.col("response").str.strip_chars() == ""))
    if empty.height:
        log.warning("dropping %d of %d examples with an empty response (ids %s ...)",
                    empty.height, df.height, empty["id"].head(5).to_list())
        df = df.filter(~pl.col("id").is_in(empty["id"].implode()))
    if df.height == 0:
        raise DataError(f"{responses}: every response is empty; nothing to train on")
    if len(scores) > 1:
        raise ValueError(f"select_trainset: at most one scores file, got {scores}")
    if scores:
        table = read_parquet(scores[0], required=["id", "loss_q", "loss_a_given_q", "loss_a", "n_a_tokens"])
        df = add_selection_metrics(df, table)
    kept = select_top(df, **selection)
    kept = kept.with_columns(pl.lit(label).alias("selection_label"),
                             pl.lit(empty.height).alias("n_dropped_empty"))
    log.info("selection %s kept %d of %d examples", label, kept.height, df.height)
    write_parquet(kept, trainset)
    return kept


SELECTION_METHODS = ("icifd", "ifd", "ppl", "length", "random", "full")


#: Score column per method (higher is selected first).
DEFAULT_SCORE_COLUMNS = {"icifd": "icifd", "ifd": "ifd", "ppl": "instruction_ppl", "length": "response_length"}


def select_top(df: pl.DataFrame, method: str, top_percent: float, seed: int = 0,
               score_columns: Mapping[str, str] | None = None) -> pl.DataFrame:
    """Keep the top ``top_percent`` % of rows by one criterion; ties break by ``id``.

    * ``icifd`` -- highest IC-IFD first (column ``icifd``);
    * ``ifd``   -- highest IFD first (column ``ifd``);
    * ``ppl``   -- highest *instruction* perplexity first (column
      ``instruction_ppl``): the direction Hui et al. use for "harder"
      instructions; pick the column of your metric stage;
    * ``length`` -- longest response first (column ``response_length``; if
      absent, the character length of ``response``);
    * ``random`` -- a seeded random subset (order by ``content_id(seed, id)``);
    * ``full``  -- every row (``top_percent`` ignored).

    The count is ``ceil(n * top_percent / 100)`` (at least one row when
    ``n > 0``). Rows with a null/NaN score rank last. The result is sorted by
    selection rank and carries ``selection`` (the method), ``selection_percent``
    and ``selection_rank`` (0 = best).
    """
    if method not in SELECTION_METHODS:
        raise ValueError(f"selection method {method!r} unknown; allowed: {', '.join(SELECTION_METHODS)}")
    if not 0 < top_percent <= 100:
        raise ValueError(f"top_percent must be in (0, 100], got {top_percent}")
    if "id" not in df.columns:
        raise DataError(f"select_top: table has no 'id' column; has {df.columns}")
    columns = {**DEFAULT_SCORE_COLUMNS, **(score_columns or {})}
    n = df.height
    if method == "full":
        k = n
        ranked = df.sort("id")
    elif method == "random":
        k = math.ceil(n * top_percent / 100 - 1e-9)
        keys = pl.Series("_key", [content_id("select-random", seed, i) for i in df["id"].to_list()])
        ranked = df.with_columns(keys).sort(["_key", "id"]).drop("_key")
    else:
        k = math.ceil(n * top_percent / 100 - 1e-9)
        col = columns[method]
        if col in df.columns:
            score = pl.col(col).cast(pl.Float64)
        elif method == "length" and "response" in df.columns:
            score = pl.col("response").str.len_chars().cast(pl.Float64)
        else:
            raise DataError(f"select_top({method!r}): table has no score column {col!r}; has {df.columns}")
        ranked = (
            df.with_columns(score.fill_nan(None).alias("_score"))
            .sort(["_score", "id"], descending=[True, False], nulls_last=True)
            .drop("_score")
        )
    k = max(k, 1) if n else 0
    return ranked.head(k).with_columns(
        pl.lit(method).alias("selection"),
        pl.lit(float(top_percent if method != "full" else 100.0)).alias("selection_percent"),
        pl.int_range(0, pl.len(), dtype=pl.Int64).alias("selection_rank"),
    )
