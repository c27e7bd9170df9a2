"""Rule ``score_rewards``: the reward of every generated sample (LLM-judge rating or reward model).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.io import (
    read_parquet,
    write_parquet,
)

log = logging.getLogger(__name__)



def score_rewards(generations_path: str | Path, model_dir: str | Path, out_path: str | Path,
                  reward: dict[str, Any], threads: int = 1) -> pl.DataFrame:
    """Reward of every generated sample: an LLM-judge rating or a reward-model score."""
    import tempfile

    from teachfit.models import read_manifest
    from teachfit.scoring.judge import reward_file

    gens = read_parquet(generations_path, required=["id", "sample_idx", "instruction", "response"])
    keyed = gens.select(
        pl.format("{}#{}", "id", "sample_idx").alias("id"), "instruction", "response")
    settings = {"method": "seq_cls" if reward.get("type") == "classifier" else "rating",
                "batch_size": reward.get("batch_size", 8), "version": reward.get("version", 1)}
    with tempfile.TemporaryDirectory(dir=Path(out_path).parent) as tmp:
        src = write_parquet(keyed, Path(tmp) / "pairs.parquet")
        scored = reward_file(model_dir, src, Path(tmp) / "rewards.parquet", settings,
                             provenance={"reward_model": read_manifest(model_dir)["alias"]},
                             threads=threads)
    scored = scored.with_columns(
        pl.col("id").str.replace(r"#\d+$", "").alias("id"),
        pl.col("id").str.extract(r"#(\d+)$").cast(pl.Int64).alias("sample_idx"),
    )
    write_parquet(scored, out_path)
    return scored
