"""Rules ``answer_ifs_*`` and ``score_ifs``: answers of models and SFT checkpoints to the IFS prompts and ObjecQA; tone labels and objectivity judgements.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import (
    read_parquet,
    require_columns,
    write_parquet,
)

log = logging.getLogger(__name__)



def generate_fn_from_backend(backend: Any, sampling: Any) -> Callable[[list[str]], list[str]]:
    """Adapt a :mod:`teachfit.generation` backend (``backend.generate(prompts, sampling) ->
    list[list[Completion]]``) to ``prompts -> texts`` (the first completion of each)."""

    def generate(prompts: list[str]) -> list[str]:
        outs = backend.generate(list(prompts), sampling)
        if len(outs) != len(prompts):
            raise RuntimeError(f"backend returned {len(outs)} results for {len(prompts)} prompts")
        return [o[0].text if o else "" for o in outs]

    return generate


def run_ifs(
    requests_df: pl.DataFrame,
    generate_fn: Callable[[list[str]], list[str]],
    classify_fn: Callable[[list[str]], np.ndarray],
    threshold: float = 0.5,
    empty_label: int = 0,
) -> pl.DataFrame:
    """Generate a response per request (``prompt`` column) and classify it.

    ``generate_fn(prompts) -> responses`` and ``classify_fn(texts) -> P(answer-like)`` are
    injected (e.g. :func:`generate_fn_from_backend` and ``ToneClassifier(dir).predict_proba``).
    Responses are stripped before classification (the stored ``response`` is the raw text);
    empty (whitespace-only) responses get ``label = empty_label`` without being classified.
    Adds ``response``, ``p_answer``, ``label``.
    """
    require_columns(requests_df, ["prompt", "variant"], "IFS requests")
    prompts = requests_df["prompt"].to_list()
    responses = list(generate_fn(prompts))
    if len(responses) != len(prompts):
        raise RuntimeError(f"generate_fn returned {len(responses)} responses for {len(prompts)} prompts")
    probs = np.full(len(responses), float(empty_label), dtype=np.float64)
    keep = [i for i, r in enumerate(responses) if isinstance(r, str) and r.strip()]
    if keep:
        p = np.asarray(classify_fn([responses[i].strip() for i in keep]), dtype=np.float64)
        if p.shape != (len(keep),):
            raise RuntimeError(f"classify_fn returned shape {p.shape} for {len(keep)} texts")
        probs[keep] = p
    labels = (probs >= threshold).astype(np.int64)
    return requests_df.with_columns(
        pl.Series("response", responses, dtype=pl.String),
        pl.Series("p_answer", probs),
        pl.Series("label", labels),
    )


def _generate(backend: Any, texts: list[str], max_new_tokens: int, desc: str) -> list[str]:
    from teachfit.generation.base import SamplingConfig

    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens)
    return [c[0].text for c in backend.generate(texts, sampling, desc=desc)]


def _answers_for(backend: Any, tokenizer: Any, prompts: pl.DataFrame, objecqa: pl.DataFrame,
                 formats: list[str], params: dict[str, Any], label: dict[str, Any]) -> pl.DataFrame:
    from teachfit.prompts import format_prompt
    from teachfit.studies.ifs.prompts import build_ifs_requests

    frames = []
    if formats == ["chat"]:
        req = build_ifs_requests(prompts, ["none"]).with_columns(pl.lit("chat").alias("fmt"))
        req = req.with_columns(pl.Series("prompt", [
            format_prompt(tokenizer, t, fmt="chat") for t in req["text"].to_list()]))
    else:
        req = build_ifs_requests(prompts, formats)
    req = req.with_columns(pl.Series("response", _generate(
        backend, req["prompt"].to_list(), params["max_new_tokens"], f"IFS {label.get('checkpoint', '')}")))
    frames.append(req.select("id", "variant", "fmt", "prompt", "response").with_columns(
        pl.lit("ifs").alias("task"), pl.lit(None, dtype=pl.String).alias("question")))
    if params["objecqa"].get("activate", True) and objecqa.height:
        q = objecqa["question"].to_list()
        chat = [format_prompt(tokenizer, x, fmt="chat") for x in q]
        ans = _generate(backend, chat, params["objecqa"]["max_new_tokens"], "ObjecQA")
        frames.append(pl.DataFrame({"id": objecqa["id"], "variant": None, "fmt": "chat", "prompt": chat,
                                    "response": ans, "task": "objecqa", "question": q},
                                   schema_overrides={"variant": pl.String}))
    out = pl.concat(frames, how="diagonal_relaxed")
    return out.with_columns([pl.lit(v).alias(k) for k, v in label.items()])


def answer_ifs(prompts_path: str | Path, model_dir: str | Path, sft_dir: str | None,
               out_path: str | Path, params: dict[str, Any], threads: int = 1) -> pl.DataFrame:
    """Responses of a model (three prompt formats) or of every checkpoint of an SFT run."""
    from teachfit.generation.hf import TransformersBackend
    from teachfit.models import read_manifest
    from teachfit.studies.ifs.objecqa import load_objecqa

    prompts = read_parquet(prompts_path, required=["id", "variant", "text"])
    objecqa = load_objecqa()
    if params["objecqa"].get("limit"):
        objecqa = objecqa.head(int(params["objecqa"]["limit"]))
    alias = read_manifest(model_dir)["alias"]
    frames = []
    if sft_dir is None:
        backend = TransformersBackend(model_dir, batch_size=params["batch_size"], threads=threads)
        frames.append(_answers_for(backend, backend.tokenizer, prompts, objecqa, params["formats"],
                                   params, {"model": alias, "checkpoint": "base", "step": 0,
                                            "examples_seen": 0}))
    else:
        from teachfit.training.sft import checkpoint_list, load_for_inference

        for ck in sorted(checkpoint_list(sft_dir), key=lambda c: c["step"]):
            model, tok = load_for_inference(Path(sft_dir) / ck["path"], model_dir)
            backend = TransformersBackend.from_loaded(model, tok, batch_size=params["batch_size"])
            frames.append(_answers_for(backend, tok, prompts, objecqa, ["chat"], params,
                                       {"model": alias, "checkpoint": f"checkpoint-{ck['step']}",
                                        "step": int(ck["step"]),
                                        "examples_seen": int(ck.get("examples_seen", 0))}))
    out = pl.concat(frames, how="diagonal_relaxed")
    write_parquet(out, out_path)
    return out


def score_answers(answers_path: str | Path, classifier_dir: str | Path, judge_dir: str | Path,
                  out_path: str | Path, batch_size: int = 16, threads: int = 1) -> pl.DataFrame:
    """Tone label of every IFS answer; ObjecQA objectivity judgement of every ObjecQA answer."""
    from teachfit.models import load_causal_lm, load_tokenizer
    from teachfit.scoring.judge import label_word_probs
    from teachfit.studies.ifs.objecqa import judge_objectivity
    from teachfit.studies.ifs.tone import classify_responses

    ans = read_parquet(answers_path, required=["task", "response", "checkpoint"])
    ifs = ans.filter(pl.col("task") == "ifs")
    probs, labels = classify_responses(classifier_dir, ifs["response"].to_list(), batch_size=batch_size)
    ifs = ifs.with_columns(pl.Series("p_answer", probs.astype(float)), pl.Series("label", labels.astype(int)))
    frames = [ifs]
    obj = ans.filter(pl.col("task") == "objecqa")
    if obj.height:
        tok = load_tokenizer(judge_dir, padding_side="left")
        model = load_causal_lm(judge_dir)
        judged = judge_objectivity(obj["question"].to_list(), obj["response"].to_list(),
                                   lambda prompts, words: label_word_probs(model, tok, prompts, list(words),
                                                                           batch_size))
        frames.append(pl.concat([obj, judged.select("p_objective", "judge_label")], how="horizontal"))
    out = pl.concat(frames, how="diagonal_relaxed")
    write_parquet(out, out_path)
    return out
