"""Generation with plain ``transformers`` (CPU or GPU): :class:`TransformersBackend`.

Why a decoding loop of our own instead of ``model.generate``: ``generate`` samples every row
of a batch from one global torch generator (``torch.manual_seed`` / one ``generator``), so a
sampled completion depends on which other prompts share its batch, on their order and on the
batch size. Here each sampled row draws from its own ``torch.Generator`` seeded by
:func:`~teachfit.generation.base.row_seed` (run seed + the prompt's token ids + sample index),
so a prompt's samples are reproducible whatever the batch composition (tested:
``test_sampled_rows_do_not_depend_on_batch_composition``). The loop also drops finished rows
from the batch and the KV cache, and reports the raw top-1 log-probability at every step.
Greedy decoding reproduces ``model.generate(do_sample=False)`` token for token (tested).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teachfit.generation.base import (
    Completion,
    SamplingConfig,
    encode_prompts,
    eos_token_ids,
    fit_prompts,
    model_fingerprint,
    row_seed,
    truncate_at_stop,
)
from teachfit.models import load_causal_lm, load_tokenizer

log = logging.getLogger(__name__)


@dataclass
class GenerationStats:
    """Where a :class:`TransformersBackend`'s decoding time went (cumulative; reset with
    ``backend.stats = GenerationStats()``). Prefill = the forward pass over the (left-padded)
    prompts of a batch; a decode step = one forward pass of one new token for every active row.
    ``benchmarks/bench_generation.py`` reports these to explain its batched / one-at-a-time ratio.
    Wall-clock seconds; exact on CPU (on CUDA the prefill's kernels may finish inside the first
    decode step, since launches are asynchronous)."""

    prefill_s: float = 0.0
    prefill_positions: int = 0      # rows x padded width (what the forward computes)
    prefill_tokens: int = 0         # real prompt tokens (padding excluded)
    decode_s: float = 0.0
    decode_steps: int = 0           # forward passes after the prefill
    decode_rows: int = 0            # sum over steps of the active rows (= tokens fed)

    def add_prefill(self, positions: int, tokens: int, seconds: float) -> None:
        self.prefill_positions += positions
        self.prefill_tokens += tokens
        self.prefill_s += seconds


def balanced_batches(order: list[int], max_per_batch: int) -> list[list[int]]:
    """Cut ``order`` (prompt indices, longest first) into the fewest batches of at most
    ``max_per_batch`` prompts, as equal in size as possible (sizes differ by at most one, larger
    first): 80 prompts at 64 per batch give 40 + 40, not 64 + 16, so no decode step runs a
    near-empty batch whose per-step cost (the weights read once per step, most of a small
    model's decode time on CPU) is spread over a few rows. Raises ``ValueError`` when
    ``max_per_batch`` < 1."""
    if max_per_batch < 1:
        raise ValueError(f"max_per_batch must be >= 1, got {max_per_batch}")
    n_batches = -(-len(order) // max_per_batch)
    if n_batches == 0:
        return []
    base, extra = divmod(len(order), n_batches)
    out, start = [], 0
    for b in range(n_batches):
        size = base + (1 if b < extra else 0)
        out.append(order[start : start + size])
        start += size
    return out


class TransformersBackend:
    """Batched generation with ``transformers`` (left padding, length-sorted batches).

    ``batch_size`` counts sequences (rows): with ``n`` samples per prompt a batch
    holds ``max(1, batch_size // n)`` prompts. Prompts longer than
    ``max_length - max_new_tokens`` tokens are cut from the left (:func:`fit_prompts`; a warning,
    and ``Completion.prompt_tokens_cut`` counts the removed tokens).
    ``dtype`` is the compute dtype (float32 unless asked otherwise, as every transformers
    job of the workflow); ``device`` defaults to :func:`teachfit.models.default_device`.
    Raises ``FileNotFoundError`` when ``model_dir`` has no ``config.json``.
    See the module docstring for why the decoding loop is our own.
    """

    name = "transformers"

    def __init__(
        self,
        model_dir: str | Path,
        batch_size: int,
        dtype: str = "float32",
        device: str | None = None,
        max_length: int | None = None,
        threads: int | None = None,
    ) -> None:
        model_dir = Path(model_dir)
        if not (model_dir / "config.json").exists():
            raise FileNotFoundError(f"{model_dir}: not a model directory (no config.json)")
        if threads:  # before loading, so that loading uses the same thread count
            import torch

            torch.set_num_threads(int(threads))
        tokenizer = load_tokenizer(model_dir, padding_side="left")
        model = load_causal_lm(model_dir, dtype=dtype, device=device)
        self._setup(model, tokenizer, batch_size=batch_size, max_length=max_length, threads=threads,
                    info={"dtype": dtype, "model_fingerprint": model_fingerprint(model_dir)})
        self.model_dir = model_dir

    @classmethod
    def from_loaded(
        cls,
        model: Any,
        tokenizer: Any,
        batch_size: int,
        max_length: int | None = None,
        threads: int | None = None,
    ) -> TransformersBackend:
        """Wrap an already loaded causal LM (e.g. a ``peft.PeftModel`` of an SFT checkpoint)."""
        self = cls.__new__(cls)
        self.model_dir = None
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.eval()
        self._setup(model, tokenizer, batch_size=batch_size, max_length=max_length, threads=threads,
                    info={"dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
                          "model_fingerprint": str(getattr(model, "name_or_path", type(model).__name__))})
        return self

    def _setup(self, model: Any, tokenizer: Any, batch_size: int, max_length: int | None,
               threads: int | None, info: dict[str, Any]) -> None:
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if threads:
            torch.set_num_threads(int(threads))
        self.batch_size = int(batch_size)
        self.tokenizer = tokenizer
        self.model = model
        self.device = next(model.parameters()).device
        text_cfg = model.config.get_text_config(decoder=True)
        self.max_length = max_length or getattr(text_cfg, "max_position_embeddings", None)
        self.eos_ids = eos_token_ids(tokenizer, model.config, getattr(model, "generation_config", None))
        self.pad_id = tokenizer.pad_token_id
        self.info = {"backend": self.name, **info}
        self.stats = GenerationStats()

    # -- public ------------------------------------------------------------

    def generate(
        self, prompts: list[str], sampling: SamplingConfig, desc: str = "generate"
    ) -> list[list[Completion]]:
        """One list of ``sampling.n`` completions per prompt, in input order."""
        import torch
        from tqdm.auto import tqdm

        if not prompts:
            return []
        encoded, cut = fit_prompts(encode_prompts(self.tokenizer, prompts), self.max_length,
                                   sampling.max_new_tokens, where=f"transformers {self.model_dir}")
        order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
        batches = balanced_batches(order, max(1, self.batch_size // sampling.n))
        results: list[list[Completion] | None] = [None] * len(prompts)
        with torch.inference_mode():
            for batch in tqdm(batches, desc=desc, unit="batch", mininterval=5.0):
                rows = [(encoded[i], j) for i in batch for j in range(sampling.n)]
                comps = self._generate_rows(rows, sampling)
                for k, i in enumerate(batch):
                    results[i] = comps[k * sampling.n : (k + 1) * sampling.n]
                    for c in results[i]:
                        c.prompt_tokens_cut = cut[i]
        return results  # type: ignore[return-value]

    # -- internals ---------------------------------------------------------

    def _forward(self, **kwargs: Any) -> Any:
        return self.model(use_cache=True, logits_to_keep=1, **kwargs).logits[:, -1, :].float()

    def _generate_rows(self, rows: list[tuple[list[int], int]], s: SamplingConfig) -> list[Completion]:
        """Decode a batch of rows (prompt ids, sample index); returns completions in row order."""
        import torch
        from transformers import DynamicCache

        dev = self.device
        n_rows = len(rows)
        width = max(len(ids) for ids, _ in rows)
        pad = self.pad_id if self.pad_id is not None else 0
        input_ids = torch.full((n_rows, width), pad, dtype=torch.long)
        mask = torch.zeros((n_rows, width), dtype=torch.long)
        for r, (ids, _) in enumerate(rows):
            input_ids[r, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[r, width - len(ids) :] = 1
        input_ids, mask = input_ids.to(dev), mask.to(dev)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        next_pos = mask.sum(-1)

        generators = None
        if not s.greedy:
            generators = []
            for ids, j in rows:
                g = torch.Generator(device=dev)
                g.manual_seed(row_seed(s.seed, ids, j))
                generators.append(g)

        cache = DynamicCache(config=self.model.config)
        t0 = time.perf_counter()
        logits = self._forward(input_ids=input_ids, attention_mask=mask,
                               position_ids=positions, past_key_values=cache)
        self.stats.add_prefill(n_rows * width, int(mask.sum()), time.perf_counter() - t0)
        t0 = time.perf_counter()
        active = list(range(n_rows))  # current batch position -> row index
        tokens: list[list[int]] = [[] for _ in range(n_rows)]
        lps: list[list[float]] = [[] for _ in range(n_rows)]
        finish: list[str | None] = [None] * n_rows
        stop_tail = 4 * max((len(x) for x in s.stop), default=0) + 8

        for step in range(s.max_new_tokens):
            chosen = self._choose(logits, s, generators, active)
            chosen_list = chosen.tolist()
            top1 = torch.log_softmax(logits, dim=-1).amax(dim=-1).tolist() if s.logprobs else None
            keep: list[int] = []
            for b, r in enumerate(active):
                tok = chosen_list[b]
                if tok in self.eos_ids:
                    finish[r] = "stop"
                    continue
                tokens[r].append(tok)
                if top1 is not None:
                    lps[r].append(top1[b])
                if s.stop and self._hit_stop(tokens[r], s.stop, stop_tail):
                    finish[r] = "stop"
                    continue
                if step + 1 == s.max_new_tokens:
                    finish[r] = "length"
                    continue
                keep.append(b)
            if not keep:
                break
            if len(keep) < len(active):  # drop finished rows from the batch and the cache
                idx = torch.tensor(keep, dtype=torch.long, device=dev)
                cache.batch_select_indices(idx)
                mask, next_pos, chosen = mask[idx], next_pos[idx], chosen[idx]
                active = [active[b] for b in keep]
                if generators is not None:
                    generators = [generators[b] for b in keep]
            mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
            logits = self._forward(input_ids=chosen[:, None], attention_mask=mask,
                                   position_ids=next_pos[:, None], past_key_values=cache)
            next_pos = next_pos + 1
            self.stats.decode_steps += 1
            self.stats.decode_rows += len(active)
        self.stats.decode_s += time.perf_counter() - t0

        out = []
        for r in range(n_rows):
            text = self.tokenizer.decode(tokens[r], skip_special_tokens=True)
            text, _ = truncate_at_stop(text, s.stop)
            out.append(Completion(text=text, token_ids=tokens[r], finish_reason=finish[r] or "length",
                                  top1_logprobs=lps[r] if s.logprobs else None))
        return out

    def _choose(self, logits: Any, s: SamplingConfig, generators: list[Any] | None,
                active: list[int]) -> Any:
        import torch

        if s.greedy:
            return logits.argmax(dim=-1)
        scores = logits / s.temperature
        if s.top_p < 1.0:
            sorted_logits, sorted_idx = torch.sort(scores, descending=False, dim=-1)
            cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
            remove_sorted = cum <= (1.0 - s.top_p)
            remove_sorted[..., -1] = False  # always keep the most likely token
            remove = remove_sorted.scatter(1, sorted_idx, remove_sorted)
            scores = scores.masked_fill(remove, float("-inf"))
        probs = scores.softmax(dim=-1)
        picks = [torch.multinomial(probs[b], 1, generator=generators[b]) for b in range(len(active))]
        return torch.cat(picks)

    def _hit_stop(self, ids: list[int], stop: list[str], tail: int) -> bool:
        text = self.tokenizer.decode(ids[-tail:], skip_special_tokens=True)
        return any(x in text for x in stop)
