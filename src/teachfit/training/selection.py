"""Training sets: full data or the top-k% by a selection metric, as the reference code selects;
:func:`select_trainset` is the rule, :func:`select_top` the ranking.

Sources (HypherX/Evolution-Analysis HEAD 7595feb, tianyi-lab/Cherry_LLM HEAD 01fac8d):

* ``icifd`` -- highest IC-IFD = L(A|Q) / (L(Q)·L(A)) first: Evolution-Analysis
  ``Evol_Instruct/select_data.py:76`` (``sorted(..., reverse=True)``) with the division form of
  ``eval_loss.py:66`` (select_data.py carries both forms, all commented out at HEAD; the
  division form is the one eval_loss.py computes and the paper describes). No IFD filter: that
  repository has none, and IC-IFD = IFD / L(Q) is not bounded by 1 (an easy instruction with
  L(Q) < 1 nat lifts it above 1), so Cherry's "IFD > 1 = the instruction does not help" cut
  has no meaning on its scale.
* ``ifd`` -- highest IFD = L(A|Q) / L(A) first, after dropping pairs with IFD > 1 (IFD == 1
  kept): Cherry_LLM ``cherry_seletion/data_by_IFD.py:106-107``; the rate applies to the
  survivors (l.118-119).
* ``ppl`` -- lowest instruction loss L(Q) first: ``select_data.py:71`` (``INST_PPL`` holds
  ``inst_loss``, the mean NLL, not its exp; same order) and l.77 (ascending, no reverse).
* ``length`` -- fewest instruction tokens first: ``select_data.py:54`` (the instruction field
  tokenized alone with the tokenizer's special tokens, input excluded: the scores'
  ``n_instruction_tokens``) and l.78 (ascending). Only this baseline runs at HEAD.
* ``random`` -- a seeded random subset (not in the references); ``full`` -- every row.

What the references leave open, and what this module does:

* select_data.py writes whole sorted files and cuts nothing (the subset was cut downstream,
  outside the repository): the top-k here is the head of that sorted order, so PPL and length
  keep the lowest loss / shortest instructions (the reading under which IFD and IC-IFD keep
  the highest scores, as both papers describe).
* Rows whose score is NaN or missing are not ranked (counted as ``n_dropped_no_score``);
  Evolution-Analysis has no NaN rule, Cherry skips such rows (data_by_IFD.py:97-98) or drops
  them with ``<= 1`` (select_from_ifd_json.py:5).
* k = ceil(rate × ranked rows), at least one row when any is ranked; the ranked rows are those
  left after the method's filters (Cherry applies the rate to the IFD ≤ 1 survivors).
  data_by_IFD.py rounds down (``int(...)``); rounding up differs by at most one row and keeps
  a row on small sets.
* Ties keep the input (file) order, as Python's stable ``sorted`` does in select_data.py;
  Cherry's ``sorted(kept)[-N:]`` of ``(IFD, index)`` tuples prefers the later row instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.io import DataError, content_id, read_parquet, write_parquet
from teachfit.scoring.metrics import ic_ifd, ifd, ppl

log = logging.getLogger(__name__)

SELECTION_METHODS = ("icifd", "ifd", "ppl", "length", "random", "full")

#: Score column per scored method and whether the highest value is selected first.
METHOD_SCORES: dict[str, tuple[str, bool]] = {
    "icifd": ("icifd", True),
    "ifd": ("ifd", True),
    "ppl": ("loss_q", False),
    "length": ("n_instruction_tokens", False),
}
#: Cherry_LLM data_by_IFD.py:106: ``if mean_rate > 1: continue`` (IFD == 1 kept).
IFD_MAX = 1.0
#: Columns of the scores file :func:`select_trainset` reads (:mod:`teachfit.scoring.losses`).
SCORE_INPUT_COLUMNS = ("id", "loss_q", "loss_a_given_q", "loss_a", "n_a_tokens", "n_instruction_tokens",
                       "truncated")
#: Count columns :func:`select_top` adds to every kept row (the trainset's provenance).
COUNT_COLUMNS = ("n_candidates", "n_dropped_no_score", "n_dropped_ifd_gt1", "n_ranked", "n_selected",
                 "n_truncated")


def add_selection_metrics(df: pl.DataFrame, scores: pl.DataFrame) -> pl.DataFrame:
    """Join per-pair losses (nats) on ``id`` and derive ``icifd``, ``ifd``, ``instruction_ppl``
    (= exp L(Q)) and ``response_length`` (scored response tokens); ``n_instruction_tokens`` and
    ``truncated`` are carried over."""
    s = scores.select(list(SCORE_INPUT_COLUMNS))
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
    ``n_dropped_empty``). ``scores``: none (``full``, ``random``) or the one scores file of the
    selection's scorer and convention (:data:`SCORE_INPUT_COLUMNS`; losses in nats), joined on
    ``id`` by :func:`add_selection_metrics`. ``selection``: keyword arguments of
    :func:`select_top` (``method``, ``top_percent``, ``seed``) and the selection semantics'
    ``version`` (``teachfit.workflow.plan.Plan.selection_methods``); ``label``: the selection's name
    (e.g. ``ifd50``), stored as ``selection_label``.

    Writes ``trainset`` (Parquet, the kept rows in selection order plus ``selection``,
    ``selection_percent``, ``selection_rank``, ``selection_label``, ``selection_version``,
    ``n_dropped_empty`` and the :data:`COUNT_COLUMNS` of :func:`select_top`). Raises :class:`DataError` naming the file when
    an input is unreadable or lacks a column, or when nothing is left to train on (every
    response empty, or no row with a usable score); ``ValueError`` for more than one scores file.
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
        table = read_parquet(scores[0], required=list(SCORE_INPUT_COLUMNS))
        df = add_selection_metrics(df, table)
    kept = select_top(df, **{k: v for k, v in selection.items() if k != "version"})
    if kept.height == 0:
        raise DataError(f"{scores[0] if scores else responses}: selection {label!r} kept nothing: "
                        f"of {df.height} examples none has a usable {selection['method']} score "
                        "(NaN scores, or IFD > 1 for every pair)")
    kept = kept.with_columns(pl.lit(label).alias("selection_label"),
                             pl.lit(selection.get("version"), dtype=pl.Int64).alias("selection_version"),
                             pl.lit(empty.height).alias("n_dropped_empty"))
    counts = kept.select(COUNT_COLUMNS).row(0, named=True)
    log.info("selection %s kept %d of %d examples (%s)", label, kept.height, df.height, counts)
    write_parquet(kept, trainset)
    return kept


def select_top(df: pl.DataFrame, method: str, top_percent: float, seed: int = 0,
               score_columns: Mapping[str, str] | None = None) -> pl.DataFrame:
    """Keep the top ``top_percent`` % of rows by one criterion, as the references select (module
    docstring): ``icifd`` / ``ifd`` highest first (``ifd`` after dropping IFD > 1), ``ppl``
    lowest L(Q) first (column ``loss_q``), ``length`` fewest instruction tokens first (column
    ``n_instruction_tokens``), ``random`` a seeded subset (order by ``content_id(seed, id)``),
    ``full`` every row (``top_percent`` ignored; sorted by ``id``).

    ``df``: one row per pair with ``id`` and the method's score column (``score_columns`` maps a
    method to another column, same direction). Rows with a NaN / null score are not ranked; k =
    ceil(ranked × top_percent / 100), at least 1 when a row is ranked; ties keep the row order
    of ``df``. Returns the kept rows in selection order with ``selection`` (the method),
    ``selection_percent``, ``selection_rank`` (0 = best) and the :data:`COUNT_COLUMNS`
    (``n_candidates`` rows in ``df``, ``n_dropped_no_score``, ``n_dropped_ifd_gt1``,
    ``n_ranked``, ``n_selected``, ``n_truncated`` = rows of ``df`` whose scores were computed
    over a truncated window, column ``truncated``; 0 when absent). Raises ``ValueError`` for an
    unknown method or a percent outside (0, 100], :class:`DataError` when a column is missing.
    """
    if method not in SELECTION_METHODS:
        raise ValueError(f"selection method {method!r} unknown; allowed: {', '.join(SELECTION_METHODS)}")
    if not 0 < top_percent <= 100:
        raise ValueError(f"top_percent must be in (0, 100], got {top_percent}")
    if "id" not in df.columns:
        raise DataError(f"select_top: table has no 'id' column; has {df.columns}")
    n = df.height
    n_truncated = int(df["truncated"].fill_null(False).sum()) if "truncated" in df.columns else 0
    dropped_nan = dropped_ifd = 0
    if method == "full":
        ranked, k = df.sort("id"), n
    elif method == "random":
        keys = pl.Series("_key", [content_id("select-random", seed, i) for i in df["id"].to_list()])
        ranked = df.with_columns(keys).sort(["_key", "id"]).drop("_key")
        k = _top_k(n, top_percent)
    else:
        highest_first = METHOD_SCORES[method][1]
        col = {**{m: c for m, (c, _) in METHOD_SCORES.items()}, **(score_columns or {})}[method]
        if col not in df.columns:
            raise DataError(f"select_top({method!r}): table has no score column {col!r}; has {df.columns}")
        scored = df.with_row_index("_row").with_columns(
            pl.col(col).cast(pl.Float64).fill_nan(None).alias("_score"))
        usable = scored.filter(pl.col("_score").is_not_null())
        dropped_nan = n - usable.height
        if method == "ifd":
            survivors = usable.filter(pl.col("_score") <= IFD_MAX)
            dropped_ifd = usable.height - survivors.height
            usable = survivors
        ranked = usable.sort(["_score", "_row"], descending=[highest_first, False]).drop("_score", "_row")
        k = _top_k(ranked.height, top_percent)
    kept = ranked.head(k)
    counts = {"n_candidates": n, "n_dropped_no_score": dropped_nan, "n_dropped_ifd_gt1": dropped_ifd,
              "n_ranked": ranked.height, "n_selected": kept.height, "n_truncated": n_truncated}
    if dropped_nan or dropped_ifd:
        log.info("select_top(%s): %d of %d rows not ranked (%d without a score, %d with IFD > %g)",
                 method, dropped_nan + dropped_ifd, n, dropped_nan, dropped_ifd, IFD_MAX)
    return kept.with_columns(
        pl.lit(method).alias("selection"),
        pl.lit(float(top_percent if method != "full" else 100.0)).alias("selection_percent"),
        pl.int_range(0, pl.len(), dtype=pl.Int64).alias("selection_rank"),
        *[pl.lit(v, dtype=pl.Int64).alias(c) for c, v in counts.items()],
    )


def _top_k(n_ranked: int, top_percent: float) -> int:
    """ceil(n_ranked × top_percent / 100), at least 1 when ``n_ranked > 0``."""
    if n_ranked == 0:
        return 0
    return max(1, math.ceil(n_ranked * top_percent / 100 - 1e-9))
