"""A mixed teacher (generator kind ``per_instruction``): for each instruction, one of several
generators' responses, chosen by a named criterion; rule ``mix_responses``.

Criteria (higher value wins; :data:`CRITERIA`):

* ``student_likelihood`` -- GRAPE (Zhang, Dai & Peng 2025, "The Best Instruction-Tuning Data are
  Those That Fit", arXiv 2502.04194, method): the response with the highest length-normalised
  probability under the student, i.e. the highest mean per-token log-probability
  ``-L(A|Q)`` (nats; the student's scores of every candidate, :mod:`teachfit.scoring.losses`,
  default convention ``chat``: the tokens the student is trained on). GRAPE's exact tokenisation
  and template were not checked against its code; the ``chat`` convention is assumed.
* ``reward`` -- the highest reward of the study's reward model (``teacher.reward``).
* ``car`` -- the highest per-response CAR, ``(r + reward_offset) / (1 + beta * L(A|Q))``
  (Xu et al. 2024 Eq. 3 applied to one response instead of a data set's means; ``beta`` and
  ``reward_offset`` from ``teacher.car``). ``r + reward_offset <= 0`` gives no value.

A candidate without a finite value (empty response, prompt filling the window, non-positive
reward for ``car``) is never chosen. Ties are broken by the order of
``per_instruction.generators`` (the first listed wins). Only instructions that every candidate
answered are used; the others, and those where no candidate has a value, are counted in the
choice report and the job log, never dropped silently.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import DataError, read_parquet, write_json, write_parquet

log = logging.getLogger(__name__)

CRITERIA = ("student_likelihood", "reward", "car")
#: Criteria that need the student's scores of every candidate.
SCORED_CRITERIA = ("student_likelihood", "car")
#: Columns of a candidate's responses that describe its own selection, not the mixed one's.
_DROP = ("reward", "n_samples", "select", "response_id", "sample_idx", "generator")


def source_label(entry: Mapping[str, Any]) -> str:
    """Where a per_instruction generator's responses come from, for tables."""
    return (f"per_instruction {entry['criterion']} ({entry['student']}) of "
            f"{', '.join(entry['generators'])}")


def criterion_values(df: pl.DataFrame, criterion: str, car: Mapping[str, Any] | None = None) -> np.ndarray:
    """The criterion's value of each row (higher = better; NaN = not eligible). ``df`` needs
    ``loss_a_given_q`` (nats) for ``student_likelihood`` and ``car``, ``reward`` for ``reward``
    and ``car``; ``car`` = ``{"beta", "reward_offset"}``. Raises ``ValueError`` for an unknown
    criterion."""
    if criterion not in CRITERIA:
        raise ValueError(f"per_instruction.criterion: {criterion!r} not in {list(CRITERIA)}")
    if criterion == "reward":
        return df["reward"].cast(pl.Float64).fill_null(np.nan).to_numpy().copy()
    loss = df["loss_a_given_q"].cast(pl.Float64).fill_null(np.nan).to_numpy()
    if criterion == "student_likelihood":
        return -loss
    if car is None:
        raise ValueError("per_instruction criterion car needs teacher.car (beta, reward_offset)")
    r = df["reward"].cast(pl.Float64).fill_null(np.nan).to_numpy() + float(car["reward_offset"])
    den = 1.0 + float(car["beta"]) * loss
    with np.errstate(invalid="ignore", divide="ignore"):
        out = r / den
    out[~(np.isfinite(r) & (r > 0) & np.isfinite(den) & (den > 0))] = np.nan
    return out


def choose_per_instruction(candidates: Mapping[str, pl.DataFrame], criterion: str,
                           car: Mapping[str, Any] | None = None) -> tuple[pl.DataFrame, dict[str, Any]]:
    """For each instruction ``id`` answered by every candidate, the row of the candidate whose
    :func:`criterion_values` is highest (ties: the first candidate in ``candidates`` order).

    ``candidates`` maps generator name -> its responses (``id`` unique, plus the columns the
    criterion needs), in tie-break order. Returns the chosen rows (the columns every candidate
    has, in the first candidate's order of ids) with ``chosen_from`` (the generator) and
    ``criterion_value``, and a report: ``criterion``, ``candidates``, ``instructions`` (ids of
    the first candidate), ``incomplete`` (ids some candidate did not answer), ``no_value`` (ids
    where no candidate has a finite value), ``chosen`` (rows kept) and ``chosen_per_generator``.
    Raises :class:`DataError` when a candidate has duplicate ids, ``ValueError`` when fewer than
    two candidates are given.
    """
    names = list(candidates)
    if len(names) < 2:
        raise ValueError(f"per_instruction needs at least two candidate generators, got {names}")
    for g, df in candidates.items():
        if df["id"].is_duplicated().any():
            raise DataError(f"per_instruction candidate {g!r}: duplicate instruction ids")
    first = candidates[names[0]]
    common = set(first["id"].to_list())
    all_ids = set(common)
    for g in names[1:]:
        ids = set(candidates[g]["id"].to_list())
        common &= ids
        all_ids |= ids
    order = [i for i in first["id"].to_list() if i in common]
    shared = [c for c in first.columns if c not in _DROP and all(c in candidates[g].columns for g in names)]
    values = np.full((len(order), len(names)), -np.inf)
    rows = []
    for j, g in enumerate(names):
        df = candidates[g]
        v = criterion_values(df, criterion, car)
        pos = dict(zip(df["id"].to_list(), range(df.height)))
        idx = np.array([pos[i] for i in order], dtype=np.int64)
        vj = v[idx] if len(idx) else np.zeros(0)
        values[:, j] = np.where(np.isfinite(vj), vj, -np.inf)
        rows.append(df.select(shared)[idx] if len(idx) else df.select(shared).head(0))
    ok = np.isfinite(values).any(axis=1)
    pick = np.argmax(values, axis=1)  # the first maximum: ties go to the first listed generator
    parts = []
    for j, g in enumerate(names):
        sel = np.flatnonzero(ok & (pick == j))
        parts.append(rows[j][sel].with_columns(
            pl.lit(g).alias("chosen_from"),
            pl.Series("criterion_value", values[sel, j], dtype=pl.Float64),
            pl.Series("_pos", sel, dtype=pl.Int64)))
    chosen = pl.concat(parts, how="vertical_relaxed").sort("_pos").drop("_pos")
    report = {
        "criterion": criterion, "candidates": names,
        "instructions": len(all_ids),
        "incomplete": len(all_ids) - len(order),
        "no_value": int((~ok).sum()),
        "chosen": chosen.height,
        "chosen_per_generator": {g: int(((pick == j) & ok).sum()) for j, g in enumerate(names)},
    }
    return chosen, report


def mix_responses(candidates: list[str], scores: list[str], generations: str | Path, report: str | Path,
                  name: str, candidate_names: list[str], entry: Mapping[str, Any],
                  car: Mapping[str, Any]) -> pl.DataFrame:
    """Rule ``mix_responses``: the responses of per_instruction generator ``name``.

    ``candidates[i]`` is generator ``candidate_names[i]``'s kept responses to the study's
    instructions (``results/responses/...``: ``id``, ``instruction``, ``response``, ``reward``);
    ``scores[i]`` its responses scored by ``entry["student"]`` under ``entry["convention"]``
    (:func:`teachfit.scoring.losses.score_losses`; empty for ``criterion: reward``); ``entry`` the
    validated ``generators.<name>.per_instruction``; ``car`` = ``teacher.car`` (``beta``,
    ``reward_offset``; used by ``criterion: car``).

    Writes ``generations`` (Parquet, one row per chosen instruction, the generations-table columns
    rules ``score_rewards`` / ``select_responses`` read: the candidates' shared columns plus
    ``sample_idx`` 0, ``generator`` = ``name``, ``chosen_from``, ``criterion_value`` and
    ``chosen_reward`` (the candidate's reward)) and ``report`` (JSON, :func:`choose_per_instruction`'s
    counts). Raises ``ValueError`` when inputs and params are not aligned, :class:`DataError` when
    a file lacks a column or nothing is chosen.
    """
    criterion = entry["criterion"]
    if len(candidates) != len(candidate_names):
        raise ValueError(f"{len(candidates)} candidate files but {len(candidate_names)} candidate_names")
    need_scores = criterion in SCORED_CRITERIA
    if need_scores and len(scores) != len(candidates):
        raise ValueError(f"criterion {criterion!r} needs one scores file per candidate; got {len(scores)} "
                         f"for {len(candidates)} candidates")
    frames: dict[str, pl.DataFrame] = {}
    for i, (g, path) in enumerate(zip(candidate_names, candidates)):
        df = read_parquet(path, required=["id", "instruction", "response", "reward"])
        if need_scores:
            sc = read_parquet(scores[i], required=["id", "loss_a_given_q"]).select("id", "loss_a_given_q")
            df = df.join(sc, on="id", how="left", validate="1:1")
            if df["loss_a_given_q"].null_count():
                raise DataError(f"{scores[i]}: no score for {df['loss_a_given_q'].null_count()} response(s) "
                                f"of {path}")
        frames[g] = df.with_columns(pl.col("reward").alias("chosen_reward"))
    chosen, counts = choose_per_instruction(frames, criterion, car)
    counts = {"generator": name, "student": entry["student"], "convention": entry["convention"], **counts}
    level = logging.WARNING if counts["incomplete"] or counts["no_value"] else logging.INFO
    log.log(level, "per_instruction %s (%s): %d of %d instructions chosen (%d not answered by every candidate, "
            "%d without a value); per generator %s", name, criterion, counts["chosen"], counts["instructions"],
            counts["incomplete"], counts["no_value"], counts["chosen_per_generator"])
    if chosen.height == 0:
        raise DataError(f"per_instruction {name}: no instruction has a candidate with a finite {criterion} "
                        f"among {candidate_names}")
    out = chosen.drop([c for c in ("loss_a_given_q",) if c in chosen.columns]).with_columns(
        pl.lit(0, dtype=pl.Int64).alias("sample_idx"), pl.lit(name).alias("generator"))
    write_json(counts, report)
    write_parquet(out, generations)
    return out

