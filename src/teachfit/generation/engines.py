"""Which backend a model entry gets, built in one place for generators, evolvers, judges and IFS answers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teachfit.generation.base import BACKENDS, Backend
from teachfit.generation.hf import TransformersBackend
from teachfit.generation.vllm import VLLMBackend
from teachfit.settings import from_dict as settings_from_dict

log = logging.getLogger(__name__)



@dataclass
class BackendConfig:
    """Which backend to build and how (``generation.backend`` config block)."""

    backend: str = field(default="transformers", metadata={"help": "transformers | vllm", "choices": BACKENDS})
    batch_size: int = field(default=16, metadata={"help": "transformers: sequences per batch."})
    dtype: str | None = field(default=None, metadata={"help": "Weights dtype; default float32 (transformers) / auto (vllm)."})
    device: str | None = field(default=None, metadata={"help": "transformers: torch device; default cuda if available."})
    max_length: int | None = field(default=None, metadata={"help": "transformers: prompt+generation token limit; default the model's."})
    tensor_parallel_size: int = field(default=1, metadata={"help": "vllm: GPUs per model."})
    gpu_memory_utilization: float = field(default=0.9, metadata={"help": "vllm: fraction of GPU memory to use."})
    max_model_len: int | None = field(default=None, metadata={"help": "vllm: context length; default the model's."})
    api_base: str | None = field(default=None, metadata={"help": "openai: endpoint URL."})
    api_model: str | None = field(default=None, metadata={"help": "openai: model name at the endpoint."})
    api_key_env: str | None = field(default=None, metadata={"help": "openai: environment variable holding the key."})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend {self.backend!r} is not known; allowed: {', '.join(BACKENDS)}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.tensor_parallel_size < 1:
            raise ValueError(f"tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
        if not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> BackendConfig:
        return settings_from_dict(cls, d, "backend settings")

    def build(self, model_dir: str | Path, threads: int | None = None, seed: int = 0) -> Backend:
        if self.backend == "openai":
            from teachfit.generation.openai import OpenAIConfig

            return OpenAIConfig.from_dict({k: v for k, v in (("api_base", self.api_base),
                                                             ("api_model", self.api_model),
                                                             ("api_key_env", self.api_key_env)) if v}).build()
        if self.backend == "transformers":
            return TransformersBackend(model_dir, batch_size=self.batch_size, dtype=self.dtype or "float32",
                                       device=self.device, max_length=self.max_length, threads=threads)
        return VLLMBackend(model_dir, tensor_parallel_size=self.tensor_parallel_size,
                           dtype=self.dtype or "auto", gpu_memory_utilization=self.gpu_memory_utilization,
                           max_model_len=self.max_model_len, seed=seed)


def get_backend(model_dir: str | Path, backend: str = "transformers", **kwargs: Any) -> Backend:
    """Build a backend by name; ``kwargs`` go to its constructor."""
    if backend == "transformers":
        return TransformersBackend(model_dir, **kwargs)
    if backend == "vllm":
        return VLLMBackend(model_dir, **kwargs)
    if backend == "openai":
        # model_dir holds only the manifest of an `api` model; the endpoint comes from kwargs
        from teachfit.generation.openai import OpenAIConfig

        return OpenAIConfig.from_dict(kwargs).build()
    raise ValueError(f"backend {backend!r} is not known; allowed: {', '.join(BACKENDS)}")


def backend_settings(entry: dict[str, Any], generation: dict[str, Any]) -> dict[str, Any]:
    """The :class:`BackendConfig` of one model: its config entry (``models.<alias>``, schema
    defaults filled) and the shared ``generation`` section. The one place where a model entry
    becomes engine settings; every rule that runs a model (generators, evolvers, judges, IFS
    and win-rate answers) passes this dict as its ``backend`` param."""
    return {
        "backend": entry["backend"],
        "batch_size": generation["batch_size"],
        "dtype": entry["dtype"],
        "tensor_parallel_size": entry["tensor_parallel_size"],
        "max_model_len": entry["max_model_len"],
        "gpu_memory_utilization": entry["gpu_memory_utilization"],
        "api_base": entry["api_base"],
        "api_model": entry["api_model"],
        "api_key_env": entry["api_key_env"],
    }
