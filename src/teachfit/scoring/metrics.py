"""Data metrics from losses and rewards (pure numpy; no models).

The teacher study's per-(generator, base) table is built by
:func:`teachfit.studies.teacher.compute_data_metrics` from these primitives.

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

* **RSR** (Rank-Surprisal Ratio, Yang et al. 2026, arXiv 2601.14249; abstract: "the ratio of a
  trajectory's average token-wise rank to its average negative log-likelihood"; reference code
  UmeanNever/RankSurprisalRatio ``rsr_cal.py``): per response, the mean token rank (ranks clipped
  at 100, :data:`teachfit.scoring.losses.RANK_CLIP`) under the student divided by the mean
  token surprisal (NLL, nats) under the student: ``sum min(rank_t, 100) / sum NLL_t``, i.e. the
  surprisal-weighted mean of the token ratios ``rank_t / NLL_t``. **Lower is better** (the paper:
  informative = low probability, aligned = high-ranked tokens). A data set's (a generator's) RSR
  is the ratio of means, ``mean_i(avg_rank_i) / mean_i(avg_NLL_i)`` over its responses (the
  reference's dataset aggregation, its Appendix A.8), not the mean of per-response ratios.
  The paper's text was read only through abstracts and summaries; the definition, the clip and
  the aggregation follow the authors' code. Here "response tokens" are L(A|Q)'s tokens under the
  ``chat`` convention (the reference scores the assistant turn of the chat template).

Ratios with a zero, negative or NaN denominator are NaN (never ``inf``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

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


def rank_surprisal_ratio(mean_rank_clip, loss_a_given_q) -> np.ndarray:
    """Per-response RSR = mean clipped token rank / mean token NLL (nats) under the student
    (element-wise; both means over the same L(A|Q) tokens, so this is ``sum rank / sum NLL``;
    NaN where the NLL is ≤ 0 or missing). Yang et al. 2026 (arXiv 2601.14249), abstract and method; lower is
    better."""
    return _safe_div(mean_rank_clip, loss_a_given_q)


def dataset_rsr(mean_rank_clip, loss_a_given_q) -> float:
    """A data set's RSR: ``mean(mean_rank_clip) / mean(loss_a_given_q)`` over the responses where
    both are finite (the ratio of means of the reference code's dataset aggregation,
    UmeanNever/RankSurprisalRatio ``rsr_cal.py`` ``compute_sample_metrics``, paper Appendix A.8).
    NaN when no response is usable or the mean NLL is ≤ 0."""
    r, s = np.broadcast_arrays(_arr(mean_rank_clip), _arr(loss_a_given_q))
    ok = np.isfinite(r) & np.isfinite(s)
    if not ok.any():
        return math.nan
    return float(_safe_div(r[ok].mean(), s[ok].mean()))
