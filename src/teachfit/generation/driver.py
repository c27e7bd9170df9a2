"""Sharded, resumable generation of a record list into one Parquet table.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.generation.base import GENERATION_VERSION, Backend, Completion, SamplingConfig
from teachfit.io import (
    DataError,
    content_id,
    read_parquet,
    write_parquet,
)

log = logging.getLogger(__name__)



OUTPUT_COLUMNS = ("sample_idx", "prompt", "response", "n_response_tokens", "finish_reason",
                  "n_prompt_tokens_cut")


def _sampling_columns(s: SamplingConfig, backend_info: dict[str, Any]) -> dict[str, Any]:
    return {
        "gen_dtype": backend_info.get("dtype"),  # what the engine computed in (None: an API)
        "gen_temperature": s.temperature,
        "gen_top_p": s.top_p,
        "gen_n": s.n,
        "gen_max_new_tokens": s.max_new_tokens,
        "gen_seed": s.seed,
        "gen_stop": list(s.stop),
    }


def run_key(records: Sequence[dict[str, Any]], prompts: Sequence[str], sampling: SamplingConfig,
            shard_size: int, provenance: dict[str, Any], backend_info: dict[str, Any]) -> str:
    """Hash of everything that determines the generated rows (names the shard folder)."""
    return content_id(GENERATION_VERSION, list(records), list(prompts), sampling.to_dict(),
                      shard_size, provenance, backend_info)


def _shard_rows(records: Sequence[dict[str, Any]], prompts: Sequence[str],
                comps: list[list[Completion]], sampling: SamplingConfig,
                const: dict[str, Any]) -> pl.DataFrame:
    rows = []
    for rec, prompt, outs in zip(records, prompts, comps, strict=True):
        if len(outs) != sampling.n:
            raise RuntimeError(f"backend returned {len(outs)} completions for a prompt, expected {sampling.n}")
        for j, c in enumerate(outs):
            row = dict(rec)
            row.update(sample_idx=j, prompt=prompt, response=c.text,
                       n_response_tokens=len(c.token_ids), finish_reason=c.finish_reason,
                       n_prompt_tokens_cut=c.prompt_tokens_cut)
            if sampling.logprobs:
                row["top1_logprobs"] = [float(x) for x in (c.top1_logprobs or [])]
            row.update(const)
            rows.append(row)
    overrides: dict[str, Any] = {"gen_stop": pl.List(pl.String), "n_prompt_tokens_cut": pl.Int64,
                                 "gen_dtype": pl.String}
    if sampling.logprobs:
        overrides["top1_logprobs"] = pl.List(pl.Float64)
    return pl.DataFrame(rows, infer_schema_length=None, schema_overrides=overrides)


def _valid_shard(path: Path, prompts: Sequence[str], n: int) -> bool:
    if not path.exists():
        return False
    try:
        df = read_parquet(path, required=("prompt", "sample_idx"))
    except DataError as exc:
        log.warning("regenerating shard: %s", exc)
        return False
    expected = [p for p in prompts for _ in range(n)]
    if df.height != len(expected) or df["prompt"].to_list() != expected:
        log.warning("regenerating shard %s: %d rows, expected %d for these prompts",
                    path, df.height, len(expected))
        return False
    return True


def generate_to_parquet(
    backend: Backend,
    records: list[dict[str, Any]],
    prompts: list[str],
    sampling: SamplingConfig,
    out_path: str | Path,
    shard_dir: str | Path,
    shard_size: int = 64,
    provenance: dict[str, Any] | None = None,
    desc: str = "generate",
) -> pl.DataFrame:
    """Generate ``sampling.n`` completions per record, resumably; write and return the table.

    ``records[i]`` is generated from ``prompts[i]``. Work is done in shards of
    ``shard_size`` records, each written atomically to
    ``shard_dir/<key>/shard-00000.parquet`` where ``<key>`` hashes the records,
    prompts, sampling, shard size, provenance and backend identity; on a rerun,
    valid shards under the same key are reused, corrupt or incomplete ones are
    regenerated, and folders of other keys are deleted (use one ``shard_dir``
    per output). Output: one row per (record, sample) with the record's columns,
    ``sample_idx, prompt, response, n_response_tokens, finish_reason, n_prompt_tokens_cut``
    (+ ``top1_logprobs``), the sampling parameters as ``gen_*`` columns,
    ``gen_key`` and the ``provenance`` entries as constant columns. ``gen_dtype`` is the
    compute dtype the engine reports (``backend.info["dtype"]``; null for an API endpoint).
    ``n_prompt_tokens_cut`` counts the tokens the engine cut from the left of a prompt that did
    not fit its context (0: the whole prompt was used; null: not known, an API endpoint); the
    number of such prompts is logged.
    """
    provenance = dict(provenance or {})
    out_path, shard_dir = Path(out_path), Path(shard_dir)
    if not records:
        raise DataError(f"{out_path}: empty instruction list; nothing to generate")
    if len(records) != len(prompts):
        raise ValueError(f"{len(records)} records but {len(prompts)} prompts; they must align")
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    const = {**_sampling_columns(sampling, getattr(backend, "info", {})), **provenance}
    generated = set(OUTPUT_COLUMNS) | {"top1_logprobs", "gen_key"} | set(const)
    clashes = sorted({k for rec in records for k in rec} & generated)
    if clashes:
        raise DataError(
            f"{out_path}: input record column(s) {clashes} collide with generated columns; "
            "rename or drop them first"
        )
    key = run_key(records, prompts, sampling, shard_size, provenance, getattr(backend, "info", {}))
    const["gen_key"] = key
    run_dir = shard_dir / f"run-{key}"
    if shard_dir.exists():
        for old in shard_dir.glob("run-*"):
            if old.is_dir() and old != run_dir:
                log.info("removing shards of a different configuration: %s", old)
                shutil.rmtree(old)
    run_dir.mkdir(parents=True, exist_ok=True)

    from tqdm.auto import tqdm

    starts = list(range(0, len(records), shard_size))
    paths = [run_dir / f"shard-{k:05d}.parquet" for k in range(len(starts))]
    reused = 0
    t0 = time.time()
    for k, start in enumerate(tqdm(starts, desc=f"{desc} shards", unit="shard")):
        end = min(start + shard_size, len(records))
        if _valid_shard(paths[k], prompts[start:end], sampling.n):
            reused += 1
            continue
        comps = backend.generate(list(prompts[start:end]), sampling, desc=f"{desc} {k + 1}/{len(starts)}")
        if len(comps) != end - start:
            raise RuntimeError(f"backend returned {len(comps)} results for {end - start} prompts")
        write_parquet(_shard_rows(records[start:end], prompts[start:end], comps, sampling, const), paths[k])
    log.info("%s: %d shard(s), %d reused, %.1fs", out_path, len(starts), reused, time.time() - t0)
    df = pl.concat([read_parquet(p) for p in paths], how="vertical_relaxed")
    n_cut = df.filter((pl.col("sample_idx") == 0) & (pl.col("n_prompt_tokens_cut") > 0)).height
    if n_cut:
        log.warning("%s: %d of %d prompt(s) were cut from the left to fit the model's context "
                    "(column n_prompt_tokens_cut)", out_path, n_cut, len(records))
    write_parquet(df, out_path)
    return df
