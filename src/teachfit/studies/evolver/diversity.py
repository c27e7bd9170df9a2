"""Output-space and instruction-set statistics (Hui et al. 2024, the analysis of why smaller
evolvers write better instructions).

* :func:`top1_stats` -- distribution of the evolver's top-1 token probability
  while it writes (a flatter, lower top-1 distribution = a broader output space);
  reference code HypherX/Evolution-Analysis ``Evol_Instruct/get_response_prob.py`` (greedy,
  ``logprobs=1``, the first ``min(len, 5)`` tokens of each reply) and ``Plot_figure/plot_logprob.py``;
  :func:`top1_kde` draws that figure's curve (Scott's-rule Gaussian KDE on [0, 0.99]).
* :func:`embed` + :func:`nn_distance` -- instruction diversity: sentence
  embeddings (mean pooling over the last hidden state, L2-normalised, as
  sentence-transformers does for all-MiniLM-L6-v2) and each instruction's
  cosine distance to its nearest other instruction (the paper's minimum neighbour
  distance; reference code ``AutoIF/eval_diversity.py``, which uses a faiss index).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from teachfit.logs import timed
from teachfit.models import default_device, tokenizer_sides

QUANTILES = (0.05, 0.25, 0.75, 0.95)


def top1_stats(top1_logprobs: Sequence[Sequence[float] | None], threshold: float = 0.9) -> dict[str, float]:
    """Summary of exp(top-1 log-prob) over all generated tokens of all sequences.

    Returns ``n_sequences``, ``n_tokens``, ``mean``, ``median``, ``q05``,
    ``q25``, ``q75``, ``q95``, ``share_ge_0.9`` (share of tokens whose top-1
    probability is at least ``threshold``; the key names the threshold) and
    ``seq_mean`` (mean over sequences of the per-sequence mean). ``None``
    sequences are skipped; with no tokens the statistics are NaN.
    """
    seqs = [np.asarray(s, dtype=np.float64) for s in top1_logprobs if s is not None]
    seqs = [s for s in seqs if s.size]
    key = f"share_ge_{threshold:g}"
    out: dict[str, float] = {"n_sequences": float(len(seqs))}
    if not seqs:
        out.update({"n_tokens": 0.0, "mean": math.nan, "median": math.nan, key: math.nan,
                    "seq_mean": math.nan, **{f"q{int(q * 100):02d}": math.nan for q in QUANTILES}})
        return out
    flat = np.concatenate(seqs)
    if np.isnan(flat).any():
        raise ValueError("top1_stats: NaN log-probability")
    if (flat > 1e-6).any():
        raise ValueError(f"top1_stats: log-probabilities must be <= 0, got max {flat.max():.4g}")
    probs = np.exp(np.minimum(flat, 0.0))
    out.update({
        "n_tokens": float(probs.size),
        "mean": float(probs.mean()),
        "median": float(np.median(probs)),
        key: float((probs >= threshold).mean()),
        "seq_mean": float(np.mean([np.exp(np.minimum(s, 0.0)).mean() for s in seqs])),
    })
    for q in QUANTILES:
        out[f"q{int(q * 100):02d}"] = float(np.quantile(probs, q))
    return out


#: where the reference evaluates its KDE: ``np.linspace(0, 0.99, 1000)`` (``Plot_figure/plot_logprob.py:39``)
KDE_GRID = (0.0, 0.99, 1000)


def top1_probabilities(top1_logprobs: Sequence[Sequence[float] | None]) -> np.ndarray:
    """``exp`` of every log-probability of every sequence, pooled into one flat array (``None``
    sequences skipped), as ``Plot_figure/plot_logprob.py:19`` pools the collected values."""
    flat = [float(v) for s in top1_logprobs if s is not None for v in s]
    return np.exp(np.minimum(np.asarray(flat, dtype=np.float64), 0.0))


def top1_kde(probs: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """The output-space figure's curve: ``scipy.stats.gaussian_kde(probs)`` with its default
    bandwidth (Scott's rule), evaluated on :data:`KDE_GRID` (``Plot_figure/plot_logprob.py:36-39``;
    nothing clipped or reflected at the [0, 1] boundary, as there).

    Returns ``(grid [1000], density [1000] or None)``: None when the sample has fewer than two
    values or no spread (a KDE is undefined), so the caller can say so instead of drawing.
    """
    from scipy.stats import gaussian_kde

    grid = np.linspace(*KDE_GRID)
    x = np.asarray(probs, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size < 2 or np.all(x == x[0]):
        return grid, None
    try:
        return grid, gaussian_kde(x)(grid)
    except np.linalg.LinAlgError:
        return grid, None


def embed(texts: Sequence[str], model_dir: str | Path, batch_size: int = 32,
          max_length: int = 256, device: str | None = None) -> np.ndarray:
    """L2-normalised mean-pooled embeddings, shape ``(len(texts), hidden)``, float32.

    Loads the encoder at ``model_dir`` with ``transformers.AutoModel`` (a
    sequence-classification checkpoint loads its base encoder) on ``device``
    (:func:`teachfit.models.default_device`). Texts are batched by length (``batch_size``
    texts, at most ``max_length`` tokens each, cut from the right and right-padded whatever the
    tokenizer's config says; every model input the tokenizer makes, ``token_type_ids`` included,
    reaches the model) and the result is returned in input order. Raises ValueError for ``batch_size < 1``.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoTokenizer

    if batch_size < 1:
        raise ValueError(f"embed: batch_size must be >= 1, got {batch_size}")

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    device = default_device(device)
    with timed("model_load"):
        model = AutoModel.from_pretrained(str(model_dir))
        model.to(device).eval()
    hidden = int(model.config.hidden_size)
    texts = [str(t) for t in texts]
    out = np.zeros((len(texts), hidden), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    for start in tqdm(range(0, len(order), batch_size), desc="embed", leave=False):
        idx = order[start:start + batch_size]
        with tokenizer_sides(tok, truncation="right", padding="right"):
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt").to(device)
        with torch.no_grad():
            last = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(last.dtype)
        pooled = (last * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        pooled = torch.nn.functional.normalize(pooled.float(), p=2, dim=1)
        out[idx] = pooled.cpu().numpy()
    return out


def nn_distance(embeddings: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Per row: cosine distance (1 - cosine similarity) to the nearest *other* row.

    Rows are L2-normalised here (zero rows stay zero: similarity 0). Computed in
    chunks of ``chunk`` rows, so memory is ``O(chunk * n)``. With fewer than two
    rows the result is NaN.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"nn_distance: expected a 2-D array, got shape {x.shape}")
    n = x.shape[0]
    if n < 2:
        return np.full(n, np.nan)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.where(norms > 0, norms, 1.0)
    best = np.empty(n)
    for start in range(0, n, chunk):
        sims = x[start:start + chunk] @ x.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf
        best[start:start + chunk] = sims.max(axis=1)
    return np.clip(1.0 - best, 0.0, 2.0)
