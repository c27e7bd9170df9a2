"""Rules ``answer_ifs_model``, ``answer_ifs_run`` and ``score_ifs`` (AlShikh et al. 2023).

* :func:`answer_ifs_model`: a model's greedy answers to the IFS prompts in every configured raw
  format (``none`` / ``suffix`` / ``alpaca``) and to the ObjecQA questions (chat format), through
  the engine its config entry names (:class:`teachfit.generation.engines.BackendConfig`).
* :func:`answer_ifs_run`: the same for every checkpoint of an SFT run (IFS prompts in the chat
  format the run was trained on), each checkpoint loaded with peft and wrapped in
  :meth:`teachfit.generation.hf.TransformersBackend.from_loaded`.
* :func:`score_ifs`: the tone label of every IFS answer and the ObjecQA judge's label of every
  ObjecQA answer.

Both answer rules share one implementation (:func:`_answers_for`). Heavy imports happen inside
the functions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.checkpoints import checkpoint_list, load_for_inference, merge_lora, unmerge_lora
from teachfit.generation.base import SamplingConfig
from teachfit.generation.engines import BackendConfig
from teachfit.generation.hf import TransformersBackend
from teachfit.io import DataError, read_parquet, write_parquet
from teachfit.models import read_manifest
from teachfit.prompts import format_prompt
from teachfit.scoring.label_judge import label_scorer
from teachfit.studies.ifs.objecqa import judge_objectivity, load_objecqa, read_calibration
from teachfit.studies.ifs.prompts import IfsPromptSettings, build_ifs_requests
from teachfit.studies.ifs.tone import classify_responses

log = logging.getLogger(__name__)


def _generate(engine: Any, groups: list[tuple[list[str], int]], desc: str) -> list[list[str]]:
    """Greedy completions (temperature 0): one list of strings per ``(texts, max_new_tokens)``
    group, in input order. Groups with the same ``max_new_tokens`` go through one
    ``engine.generate`` call, so that they share batches (a checkpoint's 6 ObjecQA questions
    ride in the IFS prompts' batches instead of a 6-row batch of their own); a prompt's greedy
    answer does not depend on its batch (tested)."""
    out: list[list[str]] = [[] for _ in groups]
    for max_new in sorted({m for _, m in groups}):
        members = [g for g, (_, m) in enumerate(groups) if m == max_new]
        texts = [t for g in members for t in groups[g][0]]
        done = [c[0].text for c in engine.generate(
            texts, SamplingConfig(temperature=0.0, max_new_tokens=max_new), desc=desc)]
        for g in members:
            out[g], done = done[: len(groups[g][0])], done[len(groups[g][0]):]
    return out


def _questions(questions: str | Path, objecqa: Mapping[str, Any]) -> pl.DataFrame:
    """The ObjecQA questions to answer: none when ``objecqa.activate`` is off, else the first
    ``objecqa.limit`` (all when null)."""
    if not objecqa["activate"]:
        return pl.DataFrame(schema={"id": pl.String, "question": pl.String, "topic": pl.String})
    df = load_objecqa(questions)
    return df.head(int(objecqa["limit"])) if objecqa["limit"] else df


def _answers_for(engine: Any, tokenizer: Any, prompts: pl.DataFrame, questions: pl.DataFrame,
                 formats: list[str], max_new_tokens: int, objecqa_max_new_tokens: int,
                 label: dict[str, Any]) -> pl.DataFrame:
    """Answers of one model (or checkpoint) to the IFS prompts and the ObjecQA questions.

    ``formats``: IFS prompt formats (:data:`teachfit.studies.ifs.prompts.IFS_FORMATS`), or
    ``["chat"]``: the prompt text through the tokenizer's chat template. ObjecQA questions are
    always chat-formatted. Returns one row per (IFS prompt, format) and per question, columns
    ``id, variant, fmt, prompt, response, task ("ifs" | "objecqa"), question`` (null on IFS
    rows) and then the ``label`` keys as constant columns.
    """
    frames = []
    if formats == ["chat"]:
        req = build_ifs_requests(prompts, ["none"]).with_columns(pl.lit("chat").alias("fmt"))
        req = req.with_columns(pl.Series("prompt", [
            format_prompt(tokenizer, t, fmt="chat") for t in req["text"].to_list()]))
    else:
        req = build_ifs_requests(prompts, formats)
    q = questions["question"].to_list()
    chat = [format_prompt(tokenizer, x, fmt="chat") for x in q]
    ifs_ans, ans = _generate(engine, [(req["prompt"].to_list(), max_new_tokens), (chat, objecqa_max_new_tokens)],
                             f"IFS+ObjecQA {label.get('checkpoint', '')}".strip())
    req = req.with_columns(pl.Series("response", ifs_ans, dtype=pl.String))
    frames.append(req.select("id", "variant", "fmt", "prompt", "response").with_columns(
        pl.lit("ifs").alias("task"), pl.lit(None, dtype=pl.String).alias("question")))
    if questions.height:
        frames.append(pl.DataFrame({"id": questions["id"], "variant": None, "fmt": "chat", "prompt": chat,
                                    "response": ans, "task": "objecqa", "question": q},
                                   schema_overrides={"variant": pl.String}))
    out = pl.concat(frames, how="diagonal_relaxed")
    return out.with_columns([pl.lit(v).alias(k) for k, v in label.items()])


def answer_ifs_model(prompts: str | Path, questions: str | Path, model_dir: str | Path, answers: str | Path,
                     prompt_settings: Mapping[str, Any], objecqa: Mapping[str, Any],
                     backend: Mapping[str, Any], seed: int, threads: int | None = None) -> pl.DataFrame:
    """Rule ``answer_ifs_model``: a model's answers to the IFS prompts and ObjecQA questions.

    ``prompts``: :func:`teachfit.studies.ifs.prompts.make_ifs_prompts`'s table; ``questions``:
    the ObjecQA file; ``prompt_settings`` = config ``ifs.prompts`` (``formats``,
    ``max_new_tokens``); ``objecqa`` = config ``ifs.objecqa`` (``activate``, ``limit``,
    ``max_new_tokens``); ``backend``: the model's engine settings
    (:func:`teachfit.generation.engines.backend_settings`), built with ``threads`` and
    ``seed``. Greedy decoding, raw prompt strings (no chat template) for IFS. A model behind an
    OpenAI-compatible chat endpoint raises ``ValueError``: the endpoint applies its own chat
    template, so the raw formats cannot be measured. Writes ``answers`` (rows of
    :func:`_answers_for`, labelled ``model`` = the alias in the model's manifest,
    ``checkpoint="base"``, ``step=0``, ``examples_seen=0``) and returns it.
    """
    s = IfsPromptSettings.from_dict(prompt_settings)
    cfg = BackendConfig.from_dict(dict(backend))
    alias = read_manifest(model_dir)["alias"]
    if cfg.backend == "openai":
        raise ValueError(
            f"answer_ifs_model: model {alias!r} is served by an OpenAI-compatible chat endpoint, which "
            f"wraps every prompt in its own chat template; IFS prompt formats {list(s.formats)} are raw "
            "completions and cannot be measured there (drop it from ifs.models)")
    engine = cfg.build(model_dir, threads=threads, seed=seed)
    out = _answers_for(engine, engine.tokenizer, read_parquet(prompts, required=["id", "variant", "text"]),
                       _questions(questions, objecqa), list(s.formats), s.max_new_tokens,
                       int(objecqa["max_new_tokens"]),
                       {"model": alias, "checkpoint": "base", "step": 0, "examples_seen": 0})
    write_parquet(out, answers)
    return out


def answer_ifs_run(prompts: str | Path, questions: str | Path, model_dir: str | Path, sft_dir: str | Path,
                   answers: str | Path, prompt_settings: Mapping[str, Any], objecqa: Mapping[str, Any],
                   backend: Mapping[str, Any], threads: int | None = None) -> pl.DataFrame:
    """Rule ``answer_ifs_run``: answers of every checkpoint of one SFT run, in step order.

    ``model_dir``: the run's base model; ``sft_dir``: the run's ``train_sft`` output (its
    ``checkpoints.json`` lists ``step``, ``examples_seen``, ``path``). Each checkpoint is loaded
    with :func:`teachfit.checkpoints.load_for_inference` (a LoRA adapter over the base, or the
    fine-tuned weights; float32) and answered with
    ``TransformersBackend.from_loaded(model, tokenizer, batch_size=backend["batch_size"])``:
    the base entry's engine settings give the batch size; a vLLM or endpoint entry is logged,
    since a checkpoint's PEFT weights are always run with transformers. The base model is read
    from disk once: each LoRA checkpoint's adapter is attached to it and merged into its weights
    for answering (:func:`teachfit.checkpoints.merge_lora`), then the overwritten base weights
    are copied back (:func:`~teachfit.checkpoints.unmerge_lora`), which gives the same weights
    as loading the base afresh.
    IFS prompts use the chat format the run was trained on; ObjecQA as in :func:`answer_ifs_model`. Writes ``answers``
    (labelled ``model`` = base alias, ``checkpoint="checkpoint-<step>"``, ``step``,
    ``examples_seen``) and returns it.
    """
    s = IfsPromptSettings.from_dict(prompt_settings)
    alias = read_manifest(model_dir)["alias"]
    if backend["backend"] != "transformers":
        log.info("model %s: its entry names backend %r; SFT checkpoints (PEFT weights) are answered "
                 "with transformers", alias, backend["backend"])
    prompt_df = read_parquet(prompts, required=["id", "variant", "text"])
    question_df = _questions(questions, objecqa)
    frames = []
    base = None  # the base model, read once and reused under every LoRA checkpoint
    for ck in checkpoint_list(sft_dir):
        model, tok = load_for_inference(Path(sft_dir) / ck["path"], model_dir, base=base)
        model, originals = merge_lora(model)  # LoRA merged for the forward passes ({} for a full model)
        engine = TransformersBackend.from_loaded(model, tok, batch_size=int(backend["batch_size"]),
                                                 threads=threads)
        frames.append(_answers_for(engine, tok, prompt_df, question_df, ["chat"], s.max_new_tokens,
                                   int(objecqa["max_new_tokens"]),
                                   {"model": alias, "checkpoint": f"checkpoint-{ck['step']}",
                                    "step": int(ck["step"]), "examples_seen": int(ck["examples_seen"])}))
        # a LoRA checkpoint: put the base weights the merge overwrote back (bit for bit) so
        # that the next checkpoint's adapter goes onto the unchanged base
        base = unmerge_lora(model, originals) if originals else None
    out = pl.concat(frames, how="diagonal_relaxed")
    write_parquet(out, answers)
    return out


def score_ifs(answers: str | Path, classifier: str | Path, judge_dir: str | Path,
              calibration: str | Path | list[str], scores: str | Path, batch_size: int, backend: Mapping[str, Any],
              threads: int | None = None) -> pl.DataFrame:
    """Rule ``score_ifs``: tone labels of IFS answers, objectivity labels of ObjecQA answers.

    ``answers``: an ``answer_ifs_*`` table. IFS rows (``task == "ifs"``) get ``p_answer``
    (P(answer-like)) and ``label`` (1 = answer-like) from the tone classifier in ``classifier``
    (:func:`teachfit.studies.ifs.tone.classify_responses`: responses stripped first; an empty
    response is label 0 without being scored). ObjecQA rows get ``p_objective_raw`` /
    ``judge_label_raw`` (the judge as it is) and ``p_objective`` / ``judge_label`` (after the
    calibration shift stored in ``calibration`` by
    :func:`teachfit.studies.ifs.objecqa.calibrate_objecqa_judge`; the workflow passes an empty
    list when ObjecQA is off, and ObjecQA rows then raise :class:`DataError`) from
    :func:`teachfit.studies.ifs.objecqa.judge_objectivity`, the judge being
    :func:`teachfit.scoring.label_judge.label_scorer` over ``judge_dir`` with its engine settings
    ``backend`` (loaded only when there are ObjecQA rows). ``batch_size``: texts per forward pass
    of the classifier and of a local judge. Writes ``scores`` (IFS rows, then ObjecQA rows) and
    returns it.
    """
    ans = read_parquet(answers, required=["task", "response", "checkpoint"])
    ifs = ans.filter(pl.col("task") == "ifs")
    probs, labels = classify_responses(classifier, ifs["response"].to_list(), batch_size=batch_size)
    ifs = ifs.with_columns(pl.Series("p_answer", probs.astype(float)), pl.Series("label", labels.astype(int)))
    frames = [ifs]
    obj = ans.filter(pl.col("task") == "objecqa")
    if obj.height:
        if isinstance(calibration, list):
            if len(calibration) != 1:
                raise DataError(f"{answers}: ObjecQA answers need one judge calibration file, got {calibration}")
            calibration = calibration[0]
        shift = read_calibration(calibration)
        score_fn = label_scorer(judge_dir, dict(backend), batch_size, threads)
        judged = judge_objectivity(obj["question"].to_list(), obj["response"].to_list(), score_fn,
                                   shift=shift)
        frames.append(pl.concat([obj, judged.select("p_objective_raw", "judge_label_raw", "p_objective",
                                                    "judge_label")], how="horizontal"))
    out = pl.concat(frames, how="diagonal_relaxed")
    write_parquet(out, scores)
    return out
