"""Which backend a model entry gets, built in one place for generators, evolvers, judges and IFS answers.

:func:`backend_settings` turns one model entry (``models.<alias>``, schema defaults filled) and
the shared ``generation`` section into the dict every rule that runs a model passes as its
``backend`` param (``rules/common.smk``: ``backend_config(alias)``); the rule function builds the
engine with ``BackendConfig.from_dict(backend).build(model_dir, threads=threads, seed=seed)``.

The backends are imported inside :meth:`BackendConfig.build` only, so importing this module
never imports torch, vLLM or the OpenAI SDK, and no backend module imports this one (no cycles).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teachfit.generation.base import BACKENDS, DTYPES, Backend
from teachfit.settings import from_dict as settings_from_dict

log = logging.getLogger(__name__)


@dataclass
class BackendConfig:
    """Which backend to build and how; built from :func:`backend_settings`.

    Fields without a default come from the config (the model entry and ``generation``);
    their defaults live in the schema only. ``dtype`` is the model entry's ``dtype``: the
    compute dtype of both local engines (never vLLM's ``auto``). ``device`` and ``max_length``
    are not config keys: ``None`` means the engine's own choice (transformers runs on
    :func:`teachfit.models.default_device` up to the model's context length). Raises
    ``ValueError`` naming the field on a bad value or an unsupported combination (an ``openai``
    backend without ``api_base`` / ``api_model``).
    """

    backend: str = field(metadata={"help": "Engine: transformers | vllm | openai.", "choices": BACKENDS})
    batch_size: int = field(metadata={"help": "transformers: sequences per batch (generation.batch_size)."})
    tensor_parallel_size: int = field(metadata={"help": "vllm: GPUs per model."})
    gpu_memory_utilization: float = field(metadata={"help": "vllm: fraction of GPU memory to use."})
    max_model_len: int | None = field(metadata={"help": "vllm: context length; null = the model's."})
    dtype: str = field(metadata={
        "help": "Compute dtype of the local engines (the model entry's dtype).", "choices": DTYPES})
    cpu_kvcache_gib: int = field(metadata={
        "help": "vllm on CPU: KV-cache size in GiB (exported as VLLM_CPU_KVCACHE_SPACE)."})
    enforce_eager: bool = field(metadata={"help": "vllm: no torch.compile / CUDA graphs at start-up."})
    api_base: str | None = field(metadata={"help": "openai: endpoint URL incl. the version prefix."})
    api_model: str | None = field(metadata={"help": "openai: model name at the endpoint."})
    api_key_env: str | None = field(metadata={"help": "openai: NAME of the env variable holding the key."})
    api_max_retries: int = field(
        metadata={"help": "openai: SDK retries on HTTP 408/409/429/5xx, timeouts and dropped connections."})
    api_timeout_s: float = field(metadata={"help": "openai: per-request timeout in seconds."})
    device: str | None = field(
        default=None, metadata={"help": "transformers: torch device; null = models.default_device()."})
    max_length: int | None = field(
        default=None, metadata={"help": "transformers: prompt+generation token limit; null = the model's."})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not known; allowed: {', '.join(BACKENDS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r} is not allowed; allowed: {', '.join(DTYPES)}")
        if isinstance(self.cpu_kvcache_gib, bool) or not isinstance(self.cpu_kvcache_gib, int) \
                or self.cpu_kvcache_gib < 1:
            raise ValueError(f"cpu_kvcache_gib must be an integer >= 1 (GiB), got {self.cpu_kvcache_gib!r}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")
        if self.backend == "openai" and not (self.api_base and self.api_model):
            raise ValueError("backend openai needs api_base and api_model (set them in the model entry, "
                             "source: api)")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> BackendConfig:
        return settings_from_dict(cls, d, "backend settings")

    def build(self, model_dir: str | Path, threads: int | None = None, seed: int = 0) -> Backend:
        """The engine for the materialized model at ``model_dir`` (an ``openai`` backend ignores it:
        an API model's directory holds only its manifest). ``threads`` sets torch's CPU threads
        (transformers); ``seed`` is vLLM's engine seed (per-prompt sampling seeds come from
        :class:`~teachfit.generation.base.SamplingConfig`)."""
        # lazy: the backend modules stay out of this module's imports (rules/common.smk reads
        # backend settings while Snakemake parses; tests/test_generation.py::test_engines_import_no_backend)
        if self.backend == "openai":
            from teachfit.generation.openai import OpenAIBackend  # lazy: see above

            return OpenAIBackend(api_base=self.api_base, api_model=self.api_model,
                                 api_key_env=self.api_key_env, max_retries=self.api_max_retries,
                                 timeout_s=self.api_timeout_s)
        if self.backend == "transformers":
            from teachfit.generation.hf import TransformersBackend  # lazy: see above

            return TransformersBackend(model_dir, batch_size=self.batch_size, dtype=self.dtype,
                                       device=self.device, max_length=self.max_length, threads=threads)

        from teachfit.generation.vllm import VLLMBackend  # lazy: see above

        return VLLMBackend(model_dir, tensor_parallel_size=self.tensor_parallel_size, dtype=self.dtype,
                           gpu_memory_utilization=self.gpu_memory_utilization,
                           max_model_len=self.max_model_len, cpu_kvcache_gib=self.cpu_kvcache_gib,
                           enforce_eager=self.enforce_eager, seed=seed)


def backend_settings(entry: dict[str, Any], generation: dict[str, Any]) -> dict[str, Any]:
    """The :class:`BackendConfig` of one model: its config entry (``models.<alias>``, schema
    defaults filled) and the shared ``generation`` section. The one place where a model entry
    becomes engine settings; every rule that runs a model (generators, evolvers, judges, IFS
    and win-rate answers) passes this dict as its ``backend`` param.

    The entry's ``dtype`` (the dtype of the materialized copy) is the engines' compute dtype, so
    a float32 checkpoint runs in float32 on vLLM as on transformers (vLLM's ``auto`` would run
    it in bfloat16). Raises ``KeyError`` naming the key when the entry was not filled from the schema."""
    return {
        "backend": entry["backend"],
        "batch_size": generation["batch_size"],
        "tensor_parallel_size": entry["tensor_parallel_size"],
        "max_model_len": entry["max_model_len"],
        "gpu_memory_utilization": entry["gpu_memory_utilization"],
        "dtype": entry["dtype"],
        "cpu_kvcache_gib": entry["cpu_kvcache_gib"],
        "enforce_eager": entry["enforce_eager"],
        "api_base": entry["api_base"],
        "api_model": entry["api_model"],
        "api_key_env": entry["api_key_env"],
        "api_max_retries": entry["api_max_retries"],
        "api_timeout_s": entry["api_timeout_s"],
    }
