"""Rules ``generate_responses`` and ``select_responses``: every generator answers a data set; one response kept per instruction.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.io import (
    DataError,
    content_id,
    read_parquet,
    write_parquet,
)

log = logging.getLogger(__name__)



# Plain-text demonstrations for base models prompted in the few-shot format
# (written for this project).
FEWSHOT_EXAMPLES: list[tuple[str, str]] = [
    (
        "Give two tips for staying focused while studying.",
        "1. Put your phone in another room so notifications cannot pull you away.\n"
        "2. Work in 25-minute blocks with a 5-minute break after each one.",
    ),
    (
        "What is 12 multiplied by 4?",
        "12 multiplied by 4 is 48.",
    ),
]


SAMPLING_KEYS = ("temperature", "top_p", "n", "max_new_tokens", "seed", "stop")


def build_prompts(tokenizer: Any, instructions: list[str], generator: dict[str, Any]) -> list[str]:
    from teachfit.prompts import format_prompt

    fmt = generator.get("prompt_format", "chat")
    fewshot = FEWSHOT_EXAMPLES if fmt == "fewshot" else ()
    return [
        format_prompt(tokenizer, text, fmt=fmt, system=generator.get("system"), fewshot=fewshot)
        for text in instructions
    ]


def sampling_from_generator(generator: dict[str, Any], logprobs: bool = False) -> Any:
    from teachfit.generation.base import SamplingConfig
    from teachfit.prompts import FEWSHOT_STOPS

    params = {k: generator[k] for k in SAMPLING_KEYS if k in generator}
    stops = list(params.get("stop", []))
    if generator.get("prompt_format") == "fewshot":
        stops += [s for s in FEWSHOT_STOPS if s not in stops]
    params["stop"] = stops
    return SamplingConfig(logprobs=logprobs, **params)


def generate_responses(
    instructions_path: str | Path,
    model_dir: str | Path,
    out_path: str | Path,
    shard_dir: str | Path,
    generator_name: str,
    generator: dict[str, Any],
    backend: dict[str, Any],
    generation: dict[str, Any],
    threads: int = 1,
) -> pl.DataFrame:
    """Answer every instruction with one generator (n samples each), resumable by shard."""
    from teachfit.generation.driver import generate_to_parquet
    from teachfit.generation.engines import get_backend
    from teachfit.models import load_tokenizer, read_manifest

    df = read_parquet(instructions_path, required=["id", "instruction"])
    if df.height == 0:
        raise DataError(f"{instructions_path}: empty instruction list; nothing to generate")
    sampling = sampling_from_generator(generator)
    be_kwargs: dict[str, Any] = {}
    if backend.get("backend") == "openai":
        # chat endpoint: the server applies its own template to the raw instruction
        prompts = df["instruction"].to_list()
        be_kwargs = {k: backend[k] for k in ("api_base", "api_model", "api_key_env") if backend.get(k)}
    else:
        prompts = build_prompts(load_tokenizer(model_dir), df["instruction"].to_list(), generator)
    if backend.get("backend") == "openai":
        pass
    elif backend.get("backend", "transformers") == "vllm":
        be_kwargs = {k: backend[k] for k in ("tensor_parallel_size", "max_model_len",
                                             "gpu_memory_utilization") if backend.get(k)}
    else:
        be_kwargs = {"batch_size": generation.get("batch_size", 16), "threads": threads}
    engine = get_backend(model_dir, backend=backend.get("backend", "transformers"), **be_kwargs)
    manifest = read_manifest(model_dir)
    provenance = {
        "generator": generator_name,
        "model": manifest["alias"],
        "backend": backend.get("backend", "transformers"),
        "prompt_format": generator.get("prompt_format", "chat"),
    }
    return generate_to_parquet(
        engine,
        df.to_dicts(),
        prompts,
        sampling,
        out_path=out_path,
        shard_dir=shard_dir,
        shard_size=generation.get("shard_size", 64),
        provenance=provenance,
    )


def select_responses(generations_path: str | Path, rewards_path: str | Path,
                     out_path: str | Path, select: str) -> pl.DataFrame:
    """Keep one response per instruction: the first sample, or best/worst by reward."""
    gens = read_parquet(generations_path, required=["id", "sample_idx", "response"])
    rewards = read_parquet(rewards_path, required=["id", "sample_idx", "reward"])
    df = gens.join(rewards.select("id", "sample_idx", "reward"), on=["id", "sample_idx"],
                   how="left", validate="1:1")
    missing = df.filter(pl.col("reward").is_null()).height
    if missing:
        raise DataError(f"{rewards_path}: {missing} generated responses have no reward")
    if select == "first":
        kept = df.filter(pl.col("sample_idx") == 0)
    elif select in ("best", "worst"):
        kept = (
            df.sort(["id", "reward", "sample_idx"], descending=[False, select == "best", False])
            .group_by("id", maintain_order=True)
            .first()
        )
    else:
        raise ValueError(f"select: {select!r} not in first, best, worst")
    n_samples = df.group_by("id").len().rename({"len": "n_samples"})
    kept = kept.join(n_samples, on="id", how="left").with_columns(
        pl.lit(select).alias("select"),
        pl.struct("id", "response").map_elements(
            lambda r: content_id(r["id"], r["response"], prefix="r"), return_dtype=pl.String
        ).alias("response_id"),
    )
    log.info("kept %d of %d responses (select=%s)", kept.height, df.height, select)
    write_parquet(kept, out_path)
    return kept
