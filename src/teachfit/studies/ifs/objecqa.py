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
:func:`teachfit.scoring.label_judge.label_scorer`. The answers come from the rules
``answer_ifs_model`` / ``answer_ifs_run``. Nothing here imports torch.

**Calibration** (rule :func:`calibrate_objecqa_judge`). A small judge has a label prior: SmolLM2
gave every answer p(objective) between 0.05 and 0.44, so the raw ObjecQA was 0 everywhere. The
judge's log-odds are shifted, ``logit(p_cal) = logit(p_raw) - shift``, where ``shift`` is

* ``contextual``: contextual calibration (Zhao et al. 2021, "Calibrate Before Use"; reference
  code tonyzhaozh/few-shot-learning ``run_classification.py``: content-free inputs ``["N/A", "",
  "[MASK]"]`` (L76), label probabilities averaged over them and renormalised (``get_p_content_free``,
  L212-230), then ``W = diag(p_cf)^-1`` (``eval_accuracy`` mode ``diagonal_W``, L111-141)). For two
  labels, ``W p`` renormalised is exactly ``logit(p) - logit(p_cf)``. The content-free input replaces
  both the question and the answer in the same two-shot prompt;
* ``labelled``: the maximum-likelihood bias (a logistic model with the judge's log-odds as a fixed
  offset) on the ``calibration`` split of the project's labelled answers
  (``teachfit/data/objecqa_judge_set.jsonl``);
* ``none``: 0 (the raw judge).

The judge's accuracy before and after calibration is measured on the ``heldout`` split of that
set (written for this project: answers to preference questions labelled objective / subjective).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import DataError, package_data, read_json, read_records, write_csv, write_json
from teachfit.scoring.label_judge import first_label_share, label_scorer
from teachfit.studies.ifs.intervals import wilson_interval

log = logging.getLogger(__name__)

OBJECQA_LABELS = ("objective", "subjective")
# The bare label names are passed to ``score_fn``. The judge prompt ends with "Label:" (no
# trailing space), so the score_fn scores the word *with* a leading space as the next token
# (``" " + word``, as ``teachfit.scoring.label_judge.label_word_probs`` does).
DEFAULT_LABEL_WORDS = OBJECQA_LABELS
#: content-free inputs of contextual calibration (Zhao et al. 2021, run_classification.py L76)
CONTENT_FREE_INPUTS = ("N/A", "", "[MASK]")
CALIBRATION_METHODS = ("contextual", "labelled", "none")
JUDGE_SET_SPLITS = ("calibration", "heldout")
# p_objective is clipped to [P_CLIP, 1 - P_CLIP] before taking log-odds (a judge's softmax can
# round to exactly 0 or 1 in float64)
P_CLIP = 1e-12

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


def _logit(p: np.ndarray) -> np.ndarray:
    q = np.clip(np.asarray(p, dtype=np.float64), P_CLIP, 1.0 - P_CLIP)
    return np.log(q) - np.log1p(-q)


def calibrated_p(p_objective: Sequence[float] | np.ndarray, shift: float) -> np.ndarray:
    """``sigmoid(logit(p) - shift)`` per value: the judge's p(objective) after calibration."""
    return 1.0 / (1.0 + np.exp(-(_logit(np.asarray(p_objective, dtype=np.float64)) - float(shift))))


def judge_objectivity(
    questions: Sequence[str],
    answers: Sequence[str],
    score_fn: Callable[[list[str], Sequence[str]], Any],
    shift: float = 0.0,
    label_words: Sequence[str] = DEFAULT_LABEL_WORDS,
    threshold: float = 0.5,
) -> pl.DataFrame:
    """Judge each (question, answer): raw and calibrated ``p_objective`` and labels.

    ``score_fn(prompts, label_words)`` must return an array of shape (n, 2): the probability
    (or any non-negative score) of ``label_words[0]`` (objective) and ``label_words[1]``
    (subjective) as the next token after ``Label:`` (the score_fn adds the leading space its
    tokenizer needs; the defaults are the bare names). They are renormalised over the two words:
    ``p_objective_raw = s0 / (s0 + s1)``; the calibrated ``p_objective =
    sigmoid(logit(p_objective_raw) - shift)`` (``shift`` from :func:`calibrate_objecqa_judge`'s
    JSON; 0 = uncalibrated). A label is ``"objective"`` when its p is ``>= threshold``. Rows whose
    two scores are both 0 raise (the judge saw neither word), as do negative or NaN scores.
    Returns columns ``prompt, p_objective_raw, judge_label_raw, p_objective, judge_label``.
    """
    questions, answers = list(questions), list(answers)
    if len(questions) != len(answers):
        raise ValueError(f"judge_objectivity: {len(questions)} questions but {len(answers)} answers")
    if len(label_words) != 2:
        raise ValueError(f"judge_objectivity: need 2 label words, got {list(label_words)}")
    if not math.isfinite(shift):
        raise ValueError(f"judge_objectivity: shift must be finite, got {shift}")
    prompts = [objecqa_judge_prompt(q, a) for q, a in zip(questions, answers)]
    if not prompts:
        return pl.DataFrame(schema={"prompt": pl.String, "p_objective_raw": pl.Float64,
                                    "judge_label_raw": pl.String, "p_objective": pl.Float64,
                                    "judge_label": pl.String})
    p_raw = first_label_share(score_fn(prompts, list(label_words)), len(prompts))
    p_cal = calibrated_p(p_raw, shift) if shift else p_raw

    def lab(p: np.ndarray) -> list[str]:
        return np.where(p >= threshold, OBJECQA_LABELS[0], OBJECQA_LABELS[1]).tolist()

    return pl.DataFrame({"prompt": prompts, "p_objective_raw": p_raw, "judge_label_raw": lab(p_raw),
                         "p_objective": p_cal, "judge_label": lab(p_cal)})


def objecqa_score(labels: Sequence[str]) -> float:
    """ObjecQA = share of answers judged ``"objective"``; labels must be the two label names."""
    labels = list(labels)
    if not labels:
        raise ValueError("objecqa_score: no labels")
    bad = sorted({str(x) for x in labels if x not in OBJECQA_LABELS})
    if bad:
        raise ValueError(f"objecqa_score: label(s) {bad} not allowed; allowed: {OBJECQA_LABELS}")
    return sum(x == "objective" for x in labels) / len(labels)


# =========================================================================== calibration


def load_judge_set(path: str | Path | None = None) -> pl.DataFrame:
    """The labelled judge set (``id, split, label, question, answer``); default: the packaged
    ``objecqa_judge_set.jsonl`` (written for this project). ``split`` is ``calibration`` or
    ``heldout``, ``label`` ``objective`` or ``subjective``; a record with a missing field or another
    value raises :class:`DataError` naming the record, as do repeated ids or a split without both
    labels."""
    if path is None:
        path = package_data("objecqa_judge_set.jsonl")
    recs = read_records(path)
    for i, r in enumerate(recs, start=1):
        for key in ("id", "question", "answer"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise DataError(f"{path}: record {i} has no non-empty string field {key!r}")
        if r.get("split") not in JUDGE_SET_SPLITS:
            raise DataError(f"{path}: record {i}: split {r.get('split')!r} not in {JUDGE_SET_SPLITS}")
        if r.get("label") not in OBJECQA_LABELS:
            raise DataError(f"{path}: record {i}: label {r.get('label')!r} not in {OBJECQA_LABELS}")
    df = pl.DataFrame(recs).select("id", "split", "label", "question", "answer")
    if df["id"].n_unique() != df.height:
        raise DataError(f"{path}: ids are not unique")
    for split in JUDGE_SET_SPLITS:
        if set(df.filter(pl.col("split") == split)["label"]) != set(OBJECQA_LABELS):
            raise DataError(f"{path}: split {split!r} needs answers of both labels")
    return df


def contextual_shift(content_free_scores: Any) -> tuple[float, list[float]]:
    """Contextual-calibration shift from the judge's scores on the content-free prompts.

    ``content_free_scores``: shape (k, 2), one row per content-free input. Each row is
    normalised, the rows are averaged and renormalised (``p_cf``, as ``get_p_content_free`` in
    Zhao et al.'s reference code); returns ``(logit(p_cf[0]), p_cf)``.
    """
    arr = np.asarray(content_free_scores, dtype=np.float64)
    p = first_label_share(arr, arr.shape[0])
    p_cf = np.stack([p, 1.0 - p], axis=1).mean(axis=0)
    p_cf = p_cf / p_cf.sum()
    return float(_logit(np.array([p_cf[0]]))[0]), p_cf.tolist()


def labelled_shift(p_objective: Sequence[float], is_objective: Sequence[bool]) -> float:
    """Maximum-likelihood bias ``b`` of ``P(objective) = sigmoid(logit(p) - b)`` on labelled answers.

    The log-likelihood is concave in ``b`` and its derivative ``sum(sigmoid(l - b) - y)`` is
    decreasing, so ``b`` is found by bisection on [-50, 50] (to 1e-10). Needs both labels (else
    ``ValueError``: with one label the optimum is infinite).
    """
    lg = _logit(np.asarray(p_objective, dtype=np.float64))
    y = np.asarray(is_objective, dtype=np.float64)
    if lg.shape != y.shape or y.size == 0 or y.min() == y.max():
        raise ValueError("labelled_shift: need aligned p and labels with both labels present")
    lo, hi = -50.0, 50.0
    while hi - lo > 1e-10:
        mid = (lo + hi) / 2.0
        grad = float((1.0 / (1.0 + np.exp(-(lg - mid))) - y).sum())  # d(-loglik)/db up to sign
        if grad > 0:  # too many predicted objective: raise the bias
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def _judge_metrics(p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy (with 95% Wilson interval), precision / recall of 'objective', share predicted
    objective, AUC-free summary of a thresholded judge at 0.5."""
    pred = p >= 0.5
    correct = pred == (y == 1)
    lo, hi = wilson_interval(int(correct.sum()), int(y.size))
    tp = int((pred & (y == 1)).sum())
    return {"accuracy": float(correct.mean()), "accuracy_lo": lo, "accuracy_hi": hi,
            "precision_objective": tp / int(pred.sum()) if pred.sum() else float("nan"),
            "recall_objective": tp / int((y == 1).sum()),
            "share_judged_objective": float(pred.mean()), "mean_p_objective": float(p.mean()),
            "n": int(y.size)}


def calibrate_objecqa_judge(judge_set: str | Path, judge_dir: str | Path, calibration: str | Path,
                            table: str | Path, objecqa: Mapping[str, Any], backend: Mapping[str, Any],
                            batch_size: int, threads: int | None = None) -> dict[str, Any]:
    """Rule ``calibrate_objecqa_judge``: the ObjecQA judge's calibration and its accuracy.

    ``judge_set``: the labelled answers (:func:`load_judge_set`); ``judge_dir`` / ``backend``:
    the judge model and its engine settings (:func:`teachfit.scoring.label_judge.label_scorer`, texts per
    forward pass ``batch_size``); ``objecqa`` = config ``ifs.objecqa`` (its ``calibration``
    names the method the study uses: ``contextual``, ``labelled`` or ``none``). One judge pass scores
    the judge set and the content-free prompts; every method's shift is computed.

    Writes ``table`` (CSV): one row per method and split (``calibration``, ``heldout``) with
    ``shift``, :func:`_judge_metrics` columns (accuracy and its 95% Wilson interval, precision
    and recall of 'objective', share judged objective, mean p) and ``used`` (the configured
    method); the ``heldout`` rows are the judge's accuracy before (``none``) and after
    calibration. Writes ``calibration`` (JSON: ``method``, ``shift`` (subtracted from the judge's
    log-odds by :func:`judge_objectivity`), every method's shift, ``p_content_free``,
    ``content_free_inputs``, ``heldout_accuracy`` per method); returns that dict.
    """
    method = objecqa["calibration"]
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"ifs.objecqa.calibration: {method!r} not in {CALIBRATION_METHODS}")
    df = load_judge_set(judge_set)
    prompts = [objecqa_judge_prompt(q, a) for q, a in zip(df["question"], df["answer"])]
    free = [objecqa_judge_prompt(x, x) for x in CONTENT_FREE_INPUTS]
    score_fn = label_scorer(judge_dir, dict(backend), batch_size, threads)
    scores = np.asarray(score_fn(prompts + free, list(DEFAULT_LABEL_WORDS)), dtype=np.float64)
    p_raw = first_label_share(scores[:len(prompts)], len(prompts))
    cc_shift, p_cf = contextual_shift(scores[len(prompts):])
    y = (df["label"] == "objective").to_numpy().astype(np.float64)
    split = df["split"].to_numpy()
    cal = split == "calibration"
    shifts = {"none": 0.0, "contextual": cc_shift, "labelled": labelled_shift(p_raw[cal], y[cal] == 1)}
    rows = []
    for name, sh in shifts.items():
        p = calibrated_p(p_raw, sh)
        for part in JUDGE_SET_SPLITS:
            m = split == part
            rows.append({"method": name, "split": part, "shift": sh, **_judge_metrics(p[m], y[m]),
                         "used": name == method})
    out = pl.DataFrame(rows)
    write_csv(out, table)
    held = {r["method"]: r["accuracy"] for r in rows if r["split"] == "heldout"}
    result = {"method": method, "shift": shifts[method], "shifts": shifts, "p_content_free": p_cf,
              "content_free_inputs": list(CONTENT_FREE_INPUTS), "heldout_accuracy": held,
              "n_heldout": int((split == "heldout").sum()), "n_calibration": int(cal.sum()),
              "judge_dir": str(judge_dir)}
    write_json(result, calibration)
    log.info("ObjecQA judge: held-out accuracy %s; shifts %s; using %s", held, shifts, method)
    return result


def read_calibration(path: str | Path) -> float:
    """The log-odds shift stored by :func:`calibrate_objecqa_judge` in ``path``
    (:class:`DataError` when the file has no finite ``shift``)."""
    data = read_json(path)
    shift = data.get("shift") if isinstance(data, dict) else None
    if not isinstance(shift, (int, float)) or not math.isfinite(shift):
        raise DataError(f"{path}: no finite 'shift' (an ObjecQA judge calibration from calibrate_objecqa_judge)")
    return float(shift)
