"""Rule ``describe_instructions``: per evolved instruction, length, judged difficulty, diversity, reward.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from teachfit.io import (
    read_parquet,
    write_parquet,
)

log = logging.getLogger(__name__)



def describe_instructions(instructions_path: str | Path, responses_path: str | Path,
                          judge_dir: str | Path, embed_dir: str | Path, out_path: str | Path,
                          batch_size: int = 16, threads: int = 1) -> pl.DataFrame:
    """Per instruction: length (words), judged difficulty, nearest-neighbour distance, reward."""
    from teachfit.models import load_causal_lm, load_tokenizer
    from teachfit.scoring.judge import JudgeSettings, difficulty_prompt, rating_scores_loaded
    from teachfit.studies.evolver.diversity import embed, nn_distance

    df = read_parquet(instructions_path, required=["id", "instruction"])
    resp = read_parquet(responses_path, required=["id", "reward"]).select("id", "reward")
    texts = df["instruction"].to_list()
    settings = JudgeSettings.from_dict({"prompt_id": "difficulty_v1", "batch_size": batch_size})
    tok = load_tokenizer(judge_dir, padding_side="left")
    model = load_causal_lm(judge_dir)
    prompts = [difficulty_prompt(tok, t, settings.prompt_id, settings.ratings) for t in texts]
    difficulty, _ = rating_scores_loaded(model, tok, prompts, settings, name=str(judge_dir))
    dist = nn_distance(embed(texts, embed_dir, batch_size=batch_size))
    stats = df.select([c for c in ("id", "root_id", "round", "operation", "evolver", "scenario", "seedset")
                       if c in df.columns]).with_columns(
        pl.Series("length_words", [len(t.split()) for t in texts], dtype=pl.Int64),
        pl.Series("difficulty", difficulty.astype(float)),
        pl.Series("nn_distance", dist.astype(float)),
    ).join(resp, on="id", how="left")
    write_parquet(stats, out_path)
    return stats
