"""95% intervals of the IFS study: Wilson intervals for shares, paired bootstrap for differences.

* :func:`wilson_interval`: the Wilson score interval of a binomial share ``k / n`` (Wilson 1927;
  the interval ``statsmodels.stats.proportion.proportion_confint(method="wilson")`` computes).
  IFS, IFS_partial, IFS_full (share of answers the tone classifier labels answer-like) and
  ObjecQA (share of answers the judge labels objective) are such shares.
* :func:`paired_bootstrap`: a percentile bootstrap of a difference between two evaluations of
  the *same* items (two checkpoints answering one prompt set / one lm-eval task), items resampled
  with replacement, the pairing kept.
* :func:`normal_diff_interval`: ``d ± z·sqrt(se_a² + se_b²)`` from two standard errors (used when
  per-item values are not available; it ignores the pairing, so it is wider than the paired
  interval would be).

Every interval here is two-sided at :data:`CONFIDENCE`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
#: two-sided 95% normal quantile, scipy.stats.norm.ppf(0.975)
Z95 = 1.959963984540054
#: bootstrap resamples of :func:`paired_bootstrap` in the study's tables
BOOTSTRAP_RESAMPLES = 2000


def wilson_interval(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval ``(lo, hi)`` of the share ``k / n`` (both in [0, 1]).

    ``lo, hi = (p + z²/2n ∓ z·sqrt(p(1-p)/n + z²/4n²)) / (1 + z²/n)`` with ``p = k/n``. Unlike the
    normal (Wald) interval it stays inside [0, 1] and is not degenerate at ``k = 0`` or ``k = n``
    (e.g. 0 of 8 gives (0, 0.324)). ``n == 0`` gives ``(nan, nan)``; ``k`` outside ``[0, n]`` or a
    negative ``n`` raises ``ValueError``.
    """
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def share_interval(flags: Sequence[int | bool]) -> tuple[float, float, float, int]:
    """``(share, lo, hi, n)`` of 0/1 flags: the share of ones and its :func:`wilson_interval`.

    An empty sequence gives ``(nan, nan, nan, 0)``.
    """
    arr = np.asarray(list(flags), dtype=np.float64)
    n = int(arr.size)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    k = float(arr.sum())
    lo, hi = wilson_interval(k, n)
    return k / n, lo, hi, n


def half_width(lo: float, hi: float) -> float:
    """Half the width of an interval (NaN stays NaN)."""
    return (hi - lo) / 2.0


def paired_bootstrap(
    sums_a: np.ndarray,
    counts_a: np.ndarray,
    sums_b: np.ndarray,
    counts_b: np.ndarray,
    n_resamples: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Bootstrap distribution of ``mean_a - mean_b`` over the same items, shape ``(n_resamples,)``.

    Item ``i`` contributes ``sums_a[i]`` over ``counts_a[i]`` units to evaluation a (a scalar
    per-item score: sum = the score, count = 1; a list-valued one such as lm-eval's
    ``inst_level_*_acc``: sum and length of the list), likewise for b; a metric is
    ``sum(sums) / sum(counts)`` over the items, which is how lm-eval aggregates a ``mean`` metric
    and a flattened list metric. Each resample draws the item indices once, with replacement, and
    uses them for both evaluations (paired). Arrays must have one shared length ``n >= 1``
    (else ``ValueError``); a resample whose counts sum to 0 gives NaN.
    """
    arrays = [np.asarray(x, dtype=np.float64) for x in (sums_a, counts_a, sums_b, counts_b)]
    n = arrays[0].shape[0]
    if n < 1 or any(a.shape != (n,) for a in arrays):
        raise ValueError(f"paired_bootstrap: need four 1-d arrays of one length >= 1, got "
                         f"{[a.shape for a in arrays]}")
    idx = rng.integers(0, n, size=(int(n_resamples), n))
    sa, ca, sb, cb = (a[idx].sum(axis=1) for a in arrays)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sa / ca - sb / cb


def percentile_interval(draws: np.ndarray) -> tuple[float, float]:
    """The central :data:`CONFIDENCE` percentile interval of bootstrap draws (NaNs dropped;
    all-NaN gives NaNs)."""
    d = np.asarray(draws, dtype=np.float64)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return float("nan"), float("nan")
    alpha = (1.0 - CONFIDENCE) / 2.0
    lo, hi = np.quantile(d, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def normal_diff_interval(diff: float, se_a: float | None, se_b: float | None) -> tuple[float, float]:
    """``diff ± Z95·sqrt(se_a² + se_b²)``; NaNs when a standard error is missing or NaN."""
    if se_a is None or se_b is None or math.isnan(se_a) or math.isnan(se_b) or math.isnan(diff):
        return float("nan"), float("nan")
    h = Z95 * math.sqrt(se_a * se_a + se_b * se_b)
    return diff - h, diff + h
