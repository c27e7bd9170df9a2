"""Rules ``generate_responses`` and ``select_responses``: every generator answers a data set;
one response is kept per instruction (Xu et al. 2024, best-of-N / worst-of-N by reward)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.generation.base import SamplingConfig
from teachfit.generation.driver import generate_to_parquet
from teachfit.generation.engines import BackendConfig
from teachfit.io import (
    DataError,
    content_id,
    read_parquet,
    write_parquet,
)
from teachfit.models import load_tokenizer, read_manifest
from teachfit.prompts import FEWSHOT_STOPS, format_prompt

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
    """The prompt string of each instruction in the generator's ``prompt_format`` (chat template,
    raw text, or the plain-text few-shot format with :data:`FEWSHOT_EXAMPLES`), with its
    ``system`` message; see :func:`teachfit.prompts.format_prompt`."""
    fmt = generator["prompt_format"]
    fewshot = FEWSHOT_EXAMPLES if fmt == "fewshot" else ()
    return [
        format_prompt(tokenizer, text, fmt=fmt, system=generator["system"], fewshot=fewshot)
        for text in instructions
    ]


def sampling_from_generator(generator: dict[str, Any], logprobs: bool = False) -> Any:
    """The :class:`~teachfit.generation.base.SamplingConfig` of a generator entry (every sampling
    key of the validated entry; few-shot prompts add :data:`teachfit.prompts.FEWSHOT_STOPS`)."""
    params = {k: generator[k] for k in SAMPLING_KEYS}
    stops = list(params["stop"])
    if generator["prompt_format"] == "fewshot":
        stops += [s for s in FEWSHOT_STOPS if s not in stops]
    params["stop"] = stops
    return SamplingConfig(logprobs=logprobs, **params)


def generate_responses(
    instructions: str | Path,
    model_dir: str | Path,
    generations: str | Path,
    shard_dir: str | Path,
    name: str,
    generator: dict[str, Any],
    backend: dict[str, Any],
    generation: dict[str, Any],
    threads: int,
) -> pl.DataFrame:
    """Rule ``generate_responses``: ``generator.n`` responses of generator ``name`` to every
    instruction of ``instructions`` (Parquet with ``id``, ``instruction``), resumable by shard.

    ``generator`` is the validated ``generators.<name>`` entry (prompt format, system message,
    sampling), ``backend`` the model's engine settings (``backend_config(alias)`` in
    ``rules/common.smk``; built with :class:`~teachfit.generation.engines.BackendConfig`) and
    ``generation`` the shared section (``shard_size``). Local engines get prompts formatted
    with the model's tokenizer (:func:`build_prompts`); an ``openai`` endpoint gets the raw
    instruction and applies its own chat template. Writes ``generations``: one row per
    (instruction, sample) with the instruction's columns, ``sample_idx, prompt, response,
    n_response_tokens, finish_reason`` (tokens), the ``gen_*`` sampling columns, ``gen_key`` and
    ``generator, model, backend, prompt_format`` (:func:`~teachfit.generation.driver.generate_to_parquet`).
    Raises :class:`~teachfit.io.DataError` on an empty or malformed instruction table.
    """
    df = read_parquet(instructions, required=["id", "instruction"])
    if df.height == 0:
        raise DataError(f"{instructions}: empty instruction list; nothing to generate")
    sampling = sampling_from_generator(generator)
    config = BackendConfig.from_dict(backend)
    if config.backend == "openai":
        # chat endpoint: the server applies its own template to the raw instruction
        prompts = df["instruction"].to_list()
    else:
        prompts = build_prompts(load_tokenizer(model_dir), df["instruction"].to_list(), generator)
    engine = config.build(model_dir, threads=threads, seed=sampling.seed)
    provenance = {
        "generator": name,
        "model": read_manifest(model_dir)["alias"],
        "backend": config.backend,
        "prompt_format": generator["prompt_format"],
    }
    return generate_to_parquet(
        engine,
        df.to_dicts(),
        prompts,
        sampling,
        out_path=generations,
        shard_dir=shard_dir,
        shard_size=generation["shard_size"],
        provenance=provenance,
    )


def select_responses(generations: str | Path, rewards: str | Path, responses: str | Path,
                     select: str) -> pl.DataFrame:
    """Rule ``select_responses``: keep one response per instruction.

    ``select`` is the generator's ``select``: ``first`` (sample 0), ``best`` or ``worst`` (highest
    / lowest reward; ties go to the lower ``sample_idx``; the paper's best-of-N / worst-of-N).
    ``generations`` and ``rewards`` join 1:1 on (``id``, ``sample_idx``). Writes ``responses``:
    the kept generation rows plus ``reward``, ``n_samples``, ``select`` and a content
    ``response_id``. Raises :class:`~teachfit.io.DataError` when a generated response has no
    reward, ``ValueError`` on an unknown ``select``.
    """
    gens = read_parquet(generations, required=["id", "sample_idx", "response"])
    scored = read_parquet(rewards, required=["id", "sample_idx", "reward"])
    df = gens.join(scored.select("id", "sample_idx", "reward"), on=["id", "sample_idx"],
                   how="left", validate="1:1")
    missing = df.filter(pl.col("reward").is_null()).height
    if missing:
        raise DataError(f"{rewards}: {missing} generated responses have no reward")
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
    write_parquet(kept, responses)
    return kept
