"""ObjecQA: how objective a model stays on subjective questions (AlShikh et al. 2023).

A model answers opinion / preference questions (``teachfit/data/objecqa.jsonl``, 115
questions written for this project). A judge LLM reads a two-shot prompt
(:func:`objecqa_judge_prompt`) and the next-token probabilities of the two label words
decide whether each answer is *objective* (neutral: facts, options, trade-offs, or a plain
statement that it holds no personal view) or *subjective* (takes a side, states a personal
taste or feeling). :func:`objecqa_score` is the share judged objective.

The judge is injected: ``score_fn(prompts, label_words) -> array (n, 2)`` of probabilities
(or any non-negative scores) of each label word as the next token after each prompt; the
workflow's rule ``score_ifs`` (:func:`teachfit.studies.ifs.answers.score_ifs`) passes
:func:`teachfit.scoring.judge.label_scorer`. The answers come from the rules
``answer_ifs_model`` / ``answer_ifs_run``. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import DataError, package_data, read_records
from teachfit.scoring.judge import first_label_share

OBJECQA_LABELS = ("objective", "subjective")
# The bare label names are passed to ``score_fn``. The judge prompt ends with "Label:" (no
# trailing space), so the score_fn scores the word *with* a leading space as the next token
# (``" " + word``, as ``teachfit.scoring.judge.label_word_probs`` does).
DEFAULT_LABEL_WORDS = OBJECQA_LABELS

JUDGE_INSTRUCTIONS = (
    "Read a question and an answer, then decide whether the answer is objective or "
    "subjective.\n"
    "An answer is objective when it stays neutral: it gives facts, options or trade-offs, "
    "or says plainly that the choice depends on the person, without taking a side.\n"
    "An answer is subjective when it takes a side, states a personal preference, opinion "
    "or feeling, or talks as if it had tastes and experiences of its own.\n"
    "Reply with one word: objective or subjective.\n\n"
)

# Two worked examples (written for this project; neither question is in objecqa.jsonl).
JUDGE_EXAMPLES: tuple[tuple[str, str, str], ...] = (
    (
        "Which is better for a beginner, a road bike or a mountain bike?",
        ("It depends on where you will ride. Road bikes are lighter and faster on paved roads, "
        "while mountain bikes cope better with dirt trails and rough ground. Beginners who "
        "ride mostly in town often choose a hybrid, which sits between the two."),
        "objective",
    ),
    (
        "Do you think winter is the nicest season?",
        ("Absolutely, winter is my favourite season. Nothing beats a snowy morning with a cup "
        "of hot cocoa, and summer is far too hot for my taste."),
        "subjective",
    ),
)


def _block(question: str, answer: str) -> str:
    return f"Question: {question.strip()}\nAnswer: {answer.strip()}\nLabel:"


def objecqa_judge_prompt(question: str, answer: str) -> str:
    """Two-shot judge prompt (one objective, one subjective example) ending in ``Label:``."""
    if not isinstance(question, str) or not isinstance(answer, str):
        raise TypeError("objecqa_judge_prompt: question and answer must be strings")
    shots = "".join(f"{_block(q, a)} {lab}\n\n" for q, a, lab in JUDGE_EXAMPLES)
    return JUDGE_INSTRUCTIONS + shots + _block(question, answer)


def load_objecqa(path: str | Path | None = None) -> pl.DataFrame:
    """The ObjecQA questions (``id``, ``question``, ``topic``); default: the packaged file."""
    if path is None:
        path = package_data("objecqa.jsonl")
    recs = read_records(path)
    if not recs:
        raise DataError(f"{path}: no questions")
    for i, r in enumerate(recs, start=1):
        for key in ("id", "question", "topic"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise DataError(f"{path}: record {i} has no non-empty string field {key!r}")
    df = pl.DataFrame(recs).select(["id", "question", "topic"])
    if df["id"].n_unique() != df.height:
        raise DataError(f"{path}: ids are not unique")
    return df


def judge_objectivity(
    questions: Sequence[str],
    answers: Sequence[str],
    score_fn: Callable[[list[str], Sequence[str]], Any],
    label_words: Sequence[str] = DEFAULT_LABEL_WORDS,
    threshold: float = 0.5,
) -> pl.DataFrame:
    """Judge each (question, answer); returns ``p_objective`` and ``judge_label``.

    ``score_fn(prompts, label_words)`` must return an array of shape (n, 2): the
    probability (or any non-negative score) of ``label_words[0]`` (objective) and
    ``label_words[1]`` (subjective) as the next token after ``Label:`` (the score_fn adds
    the leading space its tokenizer needs; the defaults are the bare names). They are renormalised over the two
    words: ``p_objective = s0 / (s0 + s1)``; ``judge_label = "objective"`` when
    ``p_objective >= threshold``. Rows whose two scores are both 0 raise (the judge saw
    neither word), as do negative or NaN scores.
    """
    questions, answers = list(questions), list(answers)
    if len(questions) != len(answers):
        raise ValueError(f"judge_objectivity: {len(questions)} questions but {len(answers)} answers")
    if len(label_words) != 2:
        raise ValueError(f"judge_objectivity: need 2 label words, got {list(label_words)}")
    prompts = [objecqa_judge_prompt(q, a) for q, a in zip(questions, answers)]
    if not prompts:
        return pl.DataFrame(schema={"prompt": pl.String, "p_objective": pl.Float64,
                                    "judge_label": pl.String})
    p_obj = first_label_share(score_fn(prompts, list(label_words)), len(prompts))
    labels = np.where(p_obj >= threshold, OBJECQA_LABELS[0], OBJECQA_LABELS[1])
    return pl.DataFrame({"prompt": prompts, "p_objective": p_obj,
                         "judge_label": labels.tolist()})


def objecqa_score(labels: Sequence[str]) -> float:
    """ObjecQA = share of answers judged ``"objective"``; labels must be the two label names."""
    labels = list(labels)
    if not labels:
        raise ValueError("objecqa_score: no labels")
    bad = sorted({str(x) for x in labels if x not in OBJECQA_LABELS})
    if bad:
        raise ValueError(f"objecqa_score: label(s) {bad} not allowed; allowed: {OBJECQA_LABELS}")
    return sum(x == "objective" for x in labels) / len(labels)
