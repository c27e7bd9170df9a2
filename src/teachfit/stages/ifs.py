"""Stages of the IFS study (AlShikh et al. 2023, "Becoming self-instruct").

* models are prompted with the paper's three formats (none = C, suffix = B,
  alpaca = A), as raw text;
* SFT checkpoints are prompted with the SFT chat template (format ``chat``), the
  format they were tuned on;
* ObjecQA questions are answered through the chat template (base models get the
  project's default template), judged by a two-shot prompt over the next-token
  probabilities of the two label words.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import DataError, read_json, read_parquet, write_csv, write_json, write_parquet

log = logging.getLogger(__name__)


def make_tone_data(pairs_paths: str | Path | list[str], out_path: str | Path, seed: int,
                   heldout_share: float) -> pl.DataFrame:
    from teachfit.evolve import read_table
    from teachfit.ifs import make_tone_dataset

    paths = [pairs_paths] if isinstance(pairs_paths, (str, Path)) else list(pairs_paths)
    frames = []
    for path in paths:
        table = read_table(path)
        missing = [c for c in ("instruction", "response") if c not in table.columns]
        if missing:
            raise DataError(f"{path}: tone-classifier pairs need columns instruction, response; "
                            f"missing {missing}")
        cols = [c for c in ("id", "instruction", "response") if c in table.columns]
        frames.append(table.select(cols))
    pairs = pl.concat(frames, how="diagonal_relaxed").unique(
        subset=["instruction", "response"], keep="first", maintain_order=True)
    if "id" in pairs.columns and pairs["id"].n_unique() != pairs.height:
        pairs = pairs.drop("id")  # ids repeat across files (same instruction, other generator)
    if "id" not in pairs.columns:
        from teachfit.io import content_id

        pairs = pairs.with_columns(pl.Series("id", [content_id(i, r) for i, r in
                                                    zip(pairs["instruction"], pairs["response"])]))
    data = make_tone_dataset(pairs.select("id", "instruction", "response"), seed=seed,
                             heldout_share=heldout_share)
    log.info("tone data: %d rows (%s)", data.height, dict(data.group_by("kind").len().iter_rows()))
    write_parquet(data, out_path)
    return data


def train_classifier(data_path: str | Path, encoder_dir: str | Path, out_dir: str | Path,
                     metrics_csv: str | Path, settings: dict[str, Any], seed: int) -> dict[str, Any]:
    from teachfit.ifs import evaluate_tone_classifier, split_tone_dataset, train_tone_classifier

    data = read_parquet(data_path, required=["text", "label", "split"])
    train, heldout = split_tone_dataset(data)
    cfg = {**settings, "seed": seed}
    info = train_tone_classifier(encoder_dir, train, out_dir, cfg)
    metrics = evaluate_tone_classifier(out_dir, heldout)
    row = {k: metrics[k] for k in ("accuracy", "precision", "recall", "f1", "n") if k in metrics}
    row.update(n_train=train.height, encoder=str(encoder_dir),
               paper_accuracy=0.970, paper_precision=0.983, paper_recall=0.925)
    write_csv(pl.DataFrame([row]), metrics_csv)
    log.info("tone classifier held-out: %s (train info %s)", row, info)
    return row


def make_prompts(source: str | None, out_path: str | Path, settings: dict[str, Any]) -> pl.DataFrame:
    from teachfit.ifs import load_ifs_instructions, make_ifs_prompts

    instructions = load_ifs_instructions(source)
    if settings.get("limit"):
        instructions = instructions.head(int(settings["limit"]))
    prompts = make_ifs_prompts(instructions, seed=settings.get("seed", 0),
                               partial_share=settings.get("partial_share", 0.5))
    write_parquet(prompts, out_path)
    return prompts


def _generate(backend: Any, texts: list[str], max_new_tokens: int, desc: str) -> list[str]:
    from teachfit.generation import SamplingConfig

    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens)
    return [c[0].text for c in backend.generate(texts, sampling, desc=desc)]


def _answers_for(backend: Any, tokenizer: Any, prompts: pl.DataFrame, objecqa: pl.DataFrame,
                 formats: list[str], params: dict[str, Any], label: dict[str, Any]) -> pl.DataFrame:
    from teachfit.ifs import build_ifs_requests
    from teachfit.prompts import format_prompt

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
    from teachfit.generation import TransformersBackend
    from teachfit.models import read_manifest
    from teachfit.objecqa import load_objecqa

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
        from teachfit.sft import checkpoint_list, load_for_inference

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
    from teachfit.ifs import classify_responses
    from teachfit.judge import label_word_probs
    from teachfit.models import load_causal_lm, load_tokenizer
    from teachfit.objecqa import judge_objectivity

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


def _curve(scores: pl.DataFrame) -> pl.DataFrame:
    from teachfit.ifs import ifs_scores

    rows = []
    for (ck,), g in scores.group_by(["checkpoint"], maintain_order=True):
        s = ifs_scores(g.filter(pl.col("task") == "ifs"))
        obj = g.filter(pl.col("task") == "objecqa")
        rows.append({"checkpoint": ck, "step": int(g["step"][0]), "examples_seen": int(g["examples_seen"][0]),
                     **s, "objecqa": float((obj["judge_label"] == "objective").mean()) if obj.height
                     else float("nan")})
    return pl.DataFrame(rows).sort("step")


def select_checkpoint(scores_path: str | Path, train_log_path: str | Path, selected_path: str | Path,
                      curve_path: str | Path, early_stopping: dict[str, Any],
                      run: dict[str, str]) -> dict[str, Any]:
    """IFS curve of one run and the plateau-selected checkpoint (rule in teachfit.ifs)."""
    from teachfit.ifs import select_plateau_checkpoint

    curve = _curve(read_parquet(scores_path))
    log_tbl = read_parquet(train_log_path)
    loss_col = "loss" if "loss" in log_tbl.columns else None
    losses = []
    for step in curve["step"].to_list():
        prior = log_tbl.filter(pl.col("step") <= step) if loss_col else pl.DataFrame()
        losses.append(float(prior.filter(pl.col(loss_col).is_not_null())[loss_col][-1])
                      if loss_col and prior.filter(pl.col(loss_col).is_not_null()).height else float("nan"))
    eps, k = float(early_stopping.get("epsilon", 0.02)), int(early_stopping.get("k", 2))
    choice = select_plateau_checkpoint(curve["step"].to_list(), curve["ifs"].to_list(), eps, k)
    idx = choice.index
    curve = curve.with_columns(pl.Series("train_loss", losses),
                               pl.Series("selected", [i == idx for i in range(curve.height)]),
                               *[pl.lit(v).alias(kk) for kk, v in run.items()])
    sel = {"step": int(curve["step"][idx]), "checkpoint": curve["checkpoint"][idx],
           "plateau_found": bool(choice.plateau_found), "epsilon": eps, "k": k, **run}
    write_parquet(curve, curve_path)
    write_json(sel, selected_path)
    return sel


def build_ifs_tables(model_scores: list[str], curves: list[str], evals: list[str],
                     outputs: dict[str, str], performance: dict[str, Any]) -> None:
    from teachfit.ifs import ifs_table

    rows = []
    for p in model_scores:
        s = read_parquet(p)
        t = ifs_table(s.filter(pl.col("task") == "ifs"), by=("model", "fmt"))
        obj = s.filter(pl.col("task") == "objecqa")
        t = t.with_columns(pl.lit(float((obj["judge_label"] == "objective").mean()) if obj.height
                                  else float("nan")).alias("objecqa"))
        rows.append(t)
    write_csv(pl.concat(rows, how="diagonal_relaxed") if rows else pl.DataFrame(), outputs["models"])
    cur = pl.concat([read_parquet(p) for p in curves], how="diagonal_relaxed") if curves else pl.DataFrame()
    write_csv(cur, outputs["checkpoints"])
    es_rows = []
    metrics = performance.get("metrics", {})
    for cpath, epath in zip(curves, evals):
        c = read_parquet(cpath)
        e = read_parquet(epath)
        sel_step = int(c.filter(pl.col("selected"))["step"][0])
        last_step = int(e["step"].max())
        row: dict[str, Any] = {k: c[k][0] for k in ("dataset", "generator", "selection", "base")}
        row.update(selected_step=sel_step, last_step=last_step)
        for which, step in (("selected", sel_step), ("last", last_step)):
            sub = e.filter(pl.col("step") == step)
            vals = []
            for task, metric in metrics.items():
                hit = sub.filter((pl.col("task") == task) & (pl.col("metric") == metric))
                v = float(hit["value"][0]) if hit.height else float("nan")
                row[f"{which}:{task}/{metric}"] = v
                vals.append(v)
            row[f"{which}:average"] = float(np.mean(vals)) if vals else float("nan")
        es_rows.append(row)
    write_csv(pl.DataFrame(es_rows) if es_rows else pl.DataFrame(), outputs["early_stopping"])


def plot_ifs_curve(curve_path: str | Path, out_png: str | Path, style: dict[str, Any]) -> None:
    from teachfit import figures

    fs = figures.FigureStyle.from_dict({**style, "formats": ["png"]})
    c = read_parquet(curve_path)
    long = pl.concat([
        c.select("examples_seen", pl.col(m).alias("value"), pl.lit(m).alias("metric"))
        for m in ("ifs", "ifs_partial", "ifs_full", "objecqa")
    ])
    sel = c.filter(pl.col("selected"))
    marks = {f"IFS plateau (step {sel['step'][0]})": float(sel["examples_seen"][0])} if sel.height else None
    run = "/".join(str(c[k][0]) for k in ("dataset", "generator", "selection", "base"))
    figures.line_curves(long, x="examples_seen", y="value", group="metric",
                        path_stem=Path(out_png).with_suffix(""), title=f"IFS and ObjecQA: {run}",
                        style=fs, marks=marks)


__all__ = ["read_json"]
