"""Rule ``score_rewards``: the reward of every generated sample (LLM-judge rating or reward model)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import DataError, read_parquet, write_parquet
from teachfit.models import load_causal_lm, load_tokenizer, read_manifest
from teachfit.scoring.label_judge import JudgeSettings, SequenceClassifierReward, rating_scores_loaded, reward_prompt
from teachfit.scoring.losses import _set_threads as set_threads
from teachfit.scoring.losses import require_text

log = logging.getLogger(__name__)

#: ``teacher.reward.type`` -> :attr:`teachfit.scoring.label_judge.JudgeSettings.method`
REWARD_METHODS = {"judge": "rating", "classifier": "seq_cls"}


def score_rewards(generations: str | Path, model_dir: str | Path, rewards: str | Path,
                  reward: dict[str, Any], threads: int) -> pl.DataFrame:
    """Rule ``score_rewards``: the reward of every generated (instruction, response) sample.

    ``reward`` is the reward section (``teacher.reward``: ``type``, ``batch_size``, ``version``;
    its ``model`` is the materialized ``model_dir``). ``type: judge`` asks the instruct model for
    a 1-5 quality rating and scores the probability-weighted rating ``Σ_k k · softmax_k`` over
    the rating tokens (a value in [1, 5]; Xu et al. 2024 use a reward model, this is the local
    stand-in); ``type: classifier`` is a sequence-classification reward model's score
    (unbounded). See :mod:`teachfit.scoring.label_judge` for both methods.

    Every row of ``generations`` (``id``, ``sample_idx``, ``instruction``, ``response``) is
    scored as it is; ``rewards`` has one row per (``id``, ``sample_idx``) in input order with
    columns ``id, reward, reward_truncated`` (the judge prompt / conversation was cut to the
    judge's ``max_length`` tokens), ``judge_method, judge_prompt_id, judge_settings_hash,
    judge_version, reward_model`` (the model's alias) and ``sample_idx``.
    Raises :class:`~teachfit.io.DataError` on a missing or non-string column, or a duplicate
    (``id``, ``sample_idx``) pair.
    """
    gens = read_parquet(generations, required=["id", "sample_idx", "instruction", "response"])
    require_text(gens, ["instruction", "response"], generations)
    if gens.select(pl.struct("id", "sample_idx").is_duplicated().any()).item():
        raise DataError(f"{generations}: duplicate (id, sample_idx) rows")
    settings = JudgeSettings(method=REWARD_METHODS[reward["type"]], batch_size=reward["batch_size"],
                             version=reward["version"])
    qs, rs = gens["instruction"].to_list(), gens["response"].to_list()
    before = set_threads(threads)
    try:
        if not qs:
            values, truncated = np.zeros(0), np.zeros(0, dtype=bool)
        elif settings.method == "seq_cls":
            values, truncated = SequenceClassifierReward(model_dir, settings).score_loaded(qs, rs)
        else:
            tok = load_tokenizer(model_dir, padding_side="left")
            model = load_causal_lm(model_dir, dtype=settings.dtype)
            prompts = [reward_prompt(tok, q, a, settings.prompt_id, settings.ratings) for q, a in zip(qs, rs)]
            values, truncated = rating_scores_loaded(model, tok, prompts, settings, name=str(model_dir))
    finally:
        set_threads(before)
    df = pl.DataFrame(
        {"id": gens["id"].cast(pl.String), "reward": values.astype(np.float64),
         "reward_truncated": truncated.astype(bool)},
        schema={"id": pl.String, "reward": pl.Float64, "reward_truncated": pl.Boolean},
    ).with_columns(
        pl.lit(settings.method).alias("judge_method"),
        pl.lit(settings.prompt_id).alias("judge_prompt_id"),
        pl.lit(settings.hash()).alias("judge_settings_hash"),
        pl.lit(settings.version).alias("judge_version"),
        pl.lit(read_manifest(model_dir)["alias"]).alias("reward_model"),
        gens["sample_idx"].cast(pl.Int64).alias("sample_idx"),
    )
    log.info("%d rewards (%s), mean %.4f", df.height, settings.method,
             float(np.nanmean(values)) if len(values) else float("nan"))
    write_parquet(df, rewards)
    return df
