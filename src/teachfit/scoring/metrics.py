"""Data metrics from losses and rewards (pure numpy / polars; no models).

Conventions (see :mod:`teachfit.scoring.losses`): a *loss* is a mean per-token negative
log-likelihood in nats, never exponentiated.

* ``L(A|Q)`` = ``loss_a_given_q``, ``L(A)`` = ``loss_a``, ``L(Q)`` = ``loss_q``.
* **PPL**: ``ppl(L) = exp(L)``; PPL(A|Q) = exp(L(A|Q)); instruction PPL = exp(L(Q)).
* **IFD** (Li et al. 2024, instruction-following difficulty): ``L(A|Q) / L(A)``.
* **IC-IFD** (Hui et al. 2024, instruction-complex-aware IFD): ``L(A|Q) / (L(Q) · L(A))``.
* **CAR** (Xu et al. 2024, compatibility-adjusted reward): ``r / (1 + β · L)`` with
  ``r`` the mean reward of a generator's responses (plus an optional
  ``reward_offset``) and ``L`` the *student base model's* mean L(A|Q) over the
  data set. A non-positive ``r`` would turn the loss penalty into a bonus, so it
  raises instead of returning an inverted ratio.

Ratios with a zero, negative or NaN denominator are NaN (never ``inf``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

LENGTH_UNITS = ("words", "chars")


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.broadcast_arrays(_arr(num), _arr(den))
    out = np.full(num.shape, np.nan)
    ok = np.isfinite(num) & np.isfinite(den) & (den > 0)
    np.divide(num, den, out=out, where=ok)
    return out


def ifd(loss_a_given_q, loss_a) -> np.ndarray:
    """IFD = L(A|Q) / L(A) (element-wise; NaN where L(A) ≤ 0 or missing)."""
    return _safe_div(loss_a_given_q, loss_a)


def ic_ifd(loss_a_given_q, loss_q, loss_a) -> np.ndarray:
    """IC-IFD = L(A|Q) / (L(Q) · L(A)) (element-wise; NaN where a factor ≤ 0 or missing)."""
    lq, la = np.broadcast_arrays(_arr(loss_q), _arr(loss_a))
    den = np.where((lq > 0) & (la > 0), lq * la, np.nan)
    return _safe_div(loss_a_given_q, den)


def ppl(loss) -> np.ndarray:
    """Perplexity exp(loss) of a mean per-token NLL in nats."""
    return np.exp(_arr(loss))


def car(mean_reward: float, mean_loss: float, beta: float, reward_offset: float = 0.0) -> float:
    """CAR = (r + reward_offset) / (1 + β · L) (Xu et al. 2024).

    ``mean_reward`` is the generator's mean reward, ``mean_loss`` the student base
    model's mean L(A|Q) on that generator's responses.
    """
    r = float(mean_reward) + float(reward_offset)
    if not math.isfinite(r) or not math.isfinite(float(mean_loss)):
        return math.nan
    if r <= 0:
        raise ValueError(
            f"CAR: mean reward {mean_reward:.6g} + reward_offset {reward_offset:.6g} = {r:.6g} ≤ 0 "
            "inverts CAR's penalty (a higher loss would raise the score); set "
            "teacher.car.reward_offset so that every generator's mean reward + offset > 0"
        )
    if beta < 0:
        raise ValueError(f"CAR: beta must be ≥ 0, got {beta}")
    den = 1.0 + float(beta) * float(mean_loss)
    if den <= 0:
        raise ValueError(f"CAR: 1 + beta·L = {den:.6g} ≤ 0 (mean loss {mean_loss:.6g} is negative?)")
    return r / den


def response_length(texts: Sequence[str], unit: str = "words") -> np.ndarray:
    """Length of each text: whitespace-separated ``words`` or ``chars``."""
    if unit not in LENGTH_UNITS:
        raise ValueError(f"response_length: unit {unit!r} not allowed; allowed: {', '.join(LENGTH_UNITS)}")
    if unit == "words":
        return np.array([len(t.split()) for t in texts], dtype=np.int64)
    return np.array([len(t) for t in texts], dtype=np.int64)


def _nanmean(x: np.ndarray) -> float:
    x = _arr(x)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def data_metrics_table(
    per_response_df: pl.DataFrame,
    base_alias: str | Sequence[str],
    reference_alias: str | None = None,
    *,
    beta: float,
    reward_offset: float = 0.0,
    generator_col: str = "generator",
    scorer_col: str = "scorer",
    reward_col: str = "reward",
    length_col: str = "n_a_tokens",
) -> pl.DataFrame:
    """Aggregate per-response scores into one row per (generator, base).

    ``per_response_df`` is long: one row per (response ``id``, ``scorer``) with
    columns ``generator`` (alias of the model that wrote the response),
    ``scorer`` (alias of the scoring model), ``loss_a_given_q``, ``loss_a``,
    optionally ``loss_q``, ``reward`` (per-response reward; optional) and
    ``n_a_tokens`` (response length in the scorer's tokens).

    For every generator and every base alias (a student base model) the row holds:

    * ``n``: responses; ``n_scored``: those with a finite L(A|Q) under the base;
    * ``mean_reward``: mean reward (finite values; NaN if no reward column);
    * ``mean_length``: mean ``n_a_tokens`` under the base scorer;
    * ``mean_loss_base``: mean L(A|Q) under the base — the ``L`` of CAR;
    * ``ppl_base`` / ``ppl_ref``: exp of the mean L(A|Q) under the base / the
      reference scorer (the data set's L, as in CAR; not a mean of per-response PPLs);
    * ``ifd_base`` / ``ifd_ref``: mean over responses of IFD = L(A|Q)/L(A);
    * ``ic_ifd_base`` / ``ic_ifd_ref``: mean IC-IFD (NaN without ``loss_q``);
    * ``car``: :func:`car` of ``mean_reward`` and ``mean_loss_base``;
    * ``car_beta``, ``car_reward_offset``: the CAR parameters used.

    Means skip NaN (empty/truncated-away responses). Reference columns are NaN
    when ``reference_alias`` is None.
    """
    bases = [base_alias] if isinstance(base_alias, str) else list(base_alias)
    need = [generator_col, scorer_col, "loss_a_given_q", "loss_a"]
    missing = [c for c in need if c not in per_response_df.columns]
    if missing:
        raise ValueError(f"data_metrics_table: missing column(s) {missing}; has {per_response_df.columns}")
    scorers = set(per_response_df[scorer_col].unique().to_list())
    for alias in [*bases, *([reference_alias] if reference_alias else [])]:
        if alias not in scorers:
            raise ValueError(f"data_metrics_table: scorer {alias!r} not in the data; scorers: {sorted(scorers)}")

    def per_scorer(gen_df: pl.DataFrame, alias: str | None) -> dict[str, float]:
        if alias is None:
            return {"ppl": math.nan, "ifd": math.nan, "ic_ifd": math.nan, "loss": math.nan,
                    "n": 0, "n_scored": 0, "length": math.nan, "reward": math.nan}
        sub = gen_df.filter(pl.col(scorer_col) == alias)
        laq = sub["loss_a_given_q"].to_numpy().astype(np.float64)
        la = sub["loss_a"].to_numpy().astype(np.float64)
        lq = sub["loss_q"].to_numpy().astype(np.float64) if "loss_q" in sub.columns else np.full_like(laq, np.nan)
        return {
            "ppl": float(ppl(_nanmean(laq))),
            "ifd": _nanmean(ifd(laq, la)),
            "ic_ifd": _nanmean(ic_ifd(laq, lq, la)),
            "loss": _nanmean(laq),
            "n": sub.height,
            "n_scored": int(np.isfinite(laq).sum()),
            "length": _nanmean(sub[length_col].to_numpy()) if length_col in sub.columns else math.nan,
            "reward": _nanmean(sub[reward_col].to_numpy()) if reward_col in sub.columns else math.nan,
        }

    rows = []
    for gen in sorted(per_response_df[generator_col].unique().to_list()):
        gen_df = per_response_df.filter(pl.col(generator_col) == gen)
        ref = per_scorer(gen_df, reference_alias)
        for base in bases:
            b = per_scorer(gen_df, base)
            car_value = (
                car(b["reward"], b["loss"], beta, reward_offset)
                if math.isfinite(b["reward"]) and math.isfinite(b["loss"]) else math.nan
            )
            rows.append({
                "generator": gen, "base": base, "n": b["n"], "n_scored": b["n_scored"],
                "mean_reward": b["reward"], "mean_length": b["length"],
                "mean_loss_base": b["loss"],
                "ppl_base": b["ppl"], "ppl_ref": ref["ppl"],
                "ifd_base": b["ifd"], "ifd_ref": ref["ifd"],
                "ic_ifd_base": b["ic_ifd"], "ic_ifd_ref": ref["ic_ifd"],
                "car": car_value, "car_beta": float(beta), "car_reward_offset": float(reward_offset),
            })
    schema = {
        "generator": pl.String, "base": pl.String, "n": pl.Int64, "n_scored": pl.Int64,
        **{k: pl.Float64 for k in ("mean_reward", "mean_length", "mean_loss_base", "ppl_base",
                                   "ppl_ref", "ifd_base", "ifd_ref", "ic_ifd_base", "ic_ifd_ref",
                                   "car", "car_beta", "car_reward_offset")},
    }
    return pl.DataFrame(rows, schema=schema)
