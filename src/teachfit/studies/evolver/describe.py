"""Rule ``describe_instructions``: per instruction, length, judged difficulty, diversity, reward.

Hui et al. 2024 compare evolved sets by instruction difficulty (an LLM judge's rating;
reference code HypherX/Evolution-Analysis ``Evol_Instruct/run_judge.py``), diversity (minimum
neighbour distance of sentence embeddings, ``AutoIF/eval_diversity.py``) and the reward of the
teacher's responses (``Evol_Instruct/eval_reward.py``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl

from teachfit.io import read_parquet, write_parquet
from teachfit.models import load_causal_lm, load_tokenizer
from teachfit.scoring.label_judge import JudgeSettings, difficulty_prompt, rating_scores_loaded
from teachfit.studies.evolver.diversity import embed, nn_distance

log = logging.getLogger(__name__)

#: columns of the instruction table carried into the statistics, when present
CARRIED_COLUMNS = ("id", "root_id", "round", "operation", "evolver", "scenario", "seedset")
#: the difficulty judge (no config section: a rating judge with the difficulty prompt; bump
#: ``version`` when its semantics change)
DIFFICULTY_JUDGE = {"method": "rating", "prompt_id": "difficulty_v1", "version": 1}


def describe_instructions(instructions: str | Path, responses: str | Path, judge_dir: str | Path,
                          embed_dir: str | Path, stats: str | Path, batch_size: int) -> pl.DataFrame:
    """Rule ``describe_instructions``: one row per instruction of ``instructions`` (``id``,
    ``instruction``; lineage columns :data:`CARRIED_COLUMNS` carried when present).

    * ``length_words``: whitespace-separated words of the instruction;
    * ``difficulty``: the judge at ``judge_dir`` (a causal LM) rates the instruction 1-5 with
      prompt ``difficulty_v1``; the probability-weighted mean rating
      (:func:`teachfit.scoring.label_judge.rating_scores_loaded`);
    * ``nn_distance``: cosine distance to the nearest other instruction of the set, from the
      encoder at ``embed_dir`` (:func:`teachfit.studies.evolver.diversity.embed`, ``nn_distance``);
      NaN for a set of one;
    * ``reward``: the reward of the teacher's kept response (``responses``: ``id``, ``reward``),
      joined by ``id``; null where the teacher has no response.

    ``batch_size`` is the judge's and the encoder's batch size. Writes ``stats`` and returns it.
    Raises DataError when an input lacks a column, JudgeError when the judge's tokenizer does
    not spell each rating as one token.
    """
    df = read_parquet(instructions, required=["id", "instruction"])
    resp = read_parquet(responses, required=["id", "reward"]).select("id", "reward")
    texts = df["instruction"].to_list()
    settings = JudgeSettings.from_dict({**DIFFICULTY_JUDGE, "batch_size": batch_size})
    tok = load_tokenizer(judge_dir, padding_side="left")
    model = load_causal_lm(judge_dir)
    prompts = [difficulty_prompt(tok, t, settings.prompt_id, settings.ratings) for t in texts]
    difficulty, _ = rating_scores_loaded(model, tok, prompts, settings, name=str(judge_dir))
    dist = nn_distance(embed(texts, embed_dir, batch_size=batch_size))
    table = df.select([c for c in CARRIED_COLUMNS if c in df.columns]).with_columns(
        pl.Series("length_words", [len(t.split()) for t in texts], dtype=pl.Int64),
        pl.Series("difficulty", difficulty.astype(float)),
        pl.Series("nn_distance", dist.astype(float)),
    ).join(resp, on="id", how="left")
    write_parquet(table, stats)
    return table
