"""Fidelity on real models (``make fidelity``): each scoring convention, computed by the batched
engine (teachfit.scoring.losses.score_pairs, what rule score_losses runs), against a plain
per-example implementation written here from the published definitions -- one example and one
transformers forward pass per quantity, the HF ``labels=`` mean loss, as the reference code does:

* evolution_analysis: HypherX/Evolution-Analysis ``Evol_Instruct/eval_loss.py:35-66`` (HEAD 7595feb);
* cherry: tianyi-lab/Cherry_LLM ``cherry_seletion/data_analysis.py:16-27, 120-151`` and
  ``data_by_IFD.py:76-107`` (HEAD 01fac8d), at its 512-token window and at 128- and 64-token windows
  (truncation and the prompt-fills-the-window drop);
* chat: the scorer's chat template as inference tokenizes it (teachfit's own convention, the
  student's SFT template for CAR's L).

Losses must agree to 1e-4 (relative), IFD and IC-IFD must rank the pairs identically. SFT's
training tokens are checked on the real tokenizers and trainer too. Runs only with
``TEACHFIT_FIDELITY=1`` (the Makefile sets it) and skips when ``results/models/{smollm2,gemma270m}``
(or ``$TEACHFIT_MODELS_DIR/...``) are not materialised; writes the measured agreement to
``$TEACHFIT_FIDELITY_OUT`` (JSON) when set.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from real_models import real_model_dir

pytestmark = [
    pytest.mark.fidelity,
    pytest.mark.skipif(os.environ.get("TEACHFIT_FIDELITY") != "1",
                       reason="real-model fidelity checks run with make fidelity (TEACHFIT_FIDELITY=1)"),
]

ALIASES = ("smollm2", "gemma270m")
TOL = 1e-4

# (instruction, input or None, response): our own pairs, chosen to hit the boundary cases of the
# definitions (instruction ending in punctuation / a digit, Alpaca inputs, a response starting
# with a newline or with punctuation that merges across "### Response:", code, a 1-token
# instruction whose L(Q) is empty without a BOS, a long response).
PAIRS = [
    ("Name three primary colors.", None,
     "Red, blue and yellow are the three primary colors of the traditional color wheel."),
    ("What is 12 times 7", None, "12 times 7 is 84."),
    ("Translate the sentence into French.", "The cat sleeps on the sofa.", "Le chat dort sur le canapé."),
    ("Write a Python function that checks whether a number is even.", None,
     "```python\ndef is_even(n: int) -> bool:\n    return n % 2 == 0\n```\nIt returns True for even numbers."),
    ("Give two tips for staying focused while studying.", None,
     "\n1. Put your phone in another room.\n2. Work in 25-minute blocks with short breaks in between."),
    ("Summarize the text in one sentence.",
     ("Bees collect nectar from flowers and turn it into honey, which they store in wax cells to feed "
     "the colony during the winter months."),
     "Bees turn nectar into honey and store it so the colony survives the winter."),
    ("Is the statement true or false? The sun rises in the west.", None,
     "False. The sun rises in the east and sets in the west."),
    ("Explain why the sky looks blue during the day.", None,
     ("Sunlight contains every visible color. As it passes through the air, the short blue wavelengths "
     "are scattered by gas molecules far more than the long red ones, a process called Rayleigh "
     "scattering. That scattered blue light reaches our eyes from every part of the sky, so the sky "
     "looks blue. Near sunrise and sunset the light crosses much more air, most of the blue is "
     "scattered away before it reaches us, and the sky turns orange and red instead.")),
    ("Classify the sentiment of this review:", "I waited an hour and the food was cold.",
     "**Negative**: the reviewer complains about the long wait and the cold food."),
    ("hi", None, "Hello! How can I help you today?"),
    ("List the planets of the solar system in order from the sun", None,
     "Mercury, Venus, Earth, Mars, Jupiter, Saturn, Uranus and Neptune."),
    ("Write a haiku about autumn rain", None,
     "Cold rain on the roof\nred leaves drift along the street\nthe kettle is warm"),
]

# Stanford Alpaca prompts as Cherry_LLM's data_analysis.py:16-27 writes them (typed here, not imported)
CHERRY_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:")
CHERRY_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                "context. Write a response that appropriately completes the request.\n\n"
                "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:")

RESULTS: dict[str, dict] = {}


@pytest.fixture(scope="module", params=ALIASES)
def real(request):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = real_model_dir(request.param)
    if path is None:
        pytest.skip(f"results/models/{request.param} is not materialised")
    torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    return request.param, path, model, AutoTokenizer.from_pretrained(path)


def hf_loss(model, ids: list[int], labels: list[int]) -> float:
    """One forward pass, ``model(input_ids, labels=...).loss`` (NaN when nothing is labelled)."""
    import torch

    if len(ids) < 2 or all(x == -100 for x in labels[1:]):
        return math.nan
    with torch.inference_mode():
        return float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([labels])).loss)


def ref_evolution_analysis(model, tok, q, inp, a):
    """eval_loss.py:35-63: L(Q), L(A|Q), L(A) with three HF losses."""
    model_inst = q + "\n" + inp if inp else q
    all_input = model_inst + "\n" + a
    ids = tok(all_input).input_ids
    a_ids = tok(a).input_ids
    nq = len(tok(model_inst).input_ids)
    lab_aq = [-100] * nq + ids[nq:]
    lab_q = ids[:nq] + [-100] * (len(ids) - nq)
    return hf_loss(model, ids, lab_q), hf_loss(model, ids, lab_aq), hf_loss(model, a_ids, a_ids)


def ref_cherry(model, tok, q, inp, a, max_length):
    """data_analysis.py (--prompt alpaca --mod cherry) + data_by_IFD.py: L(A|Q) and L(A) over the
    response tokens; None when data_by_IFD.py skips the pair (l.92: the prompt fills the window;
    l.100-101: P + the answer-alone response tokens exceed it). The direct pass keeps
    max_length - P + 4 tokens, the reference's hard-coded 4 (l.94), whatever the tokenizer.
    (tests/test_cherry_upstream.py runs the reference scripts themselves.)"""
    prompt = CHERRY_INPUT.format(instruction=q, input=inp) if inp else CHERRY_NO_INPUT.format(instruction=q)
    whole, direct = prompt + a, "### Response:" + a
    p_len = len(tok.encode(prompt, truncation=True, max_length=max_length))
    if max_length - p_len <= 0:
        return None

    def part(text, limit):
        ids = tok.encode(text, truncation=True, max_length=limit)
        start = len(tok.encode(text[: text.rfind(a)]))
        return len(ids) - start, hf_loss(model, ids, [-100] * start + ids[start:])

    len_2, loss_2 = part(whole, max_length)
    len_1, loss_1 = part(direct, max_length - p_len + 4)
    if p_len + len_1 > max_length:
        return None
    return loss_2, loss_1


def ref_chat(model, tok, q, a):
    """The chat convention: the inference prompt (chat template + generation prompt, BOS unless the
    text starts with it), the response's own tokens; L(Q) over the instruction's tokens (counted by
    tokenizing the prompt up to its start and end); L(A) with the tokenizer's own BOS or nothing."""
    text = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
    special = not (tok.bos_token and text.startswith(tok.bos_token))
    p_ids = tok(text, add_special_tokens=special).input_ids
    start = text.index(q)
    q0 = max(1, len(tok(text[:start], add_special_tokens=special).input_ids))
    q1 = len(tok(text[: start + len(q)], add_special_tokens=special).input_ids)
    r_ids = tok(a, add_special_tokens=False).input_ids
    ids = p_ids + r_ids
    lab_q = [-100] * q0 + ids[q0:q1] + [-100] * (len(ids) - q1)
    lab_aq = [-100] * len(p_ids) + r_ids
    bos = tok("x").input_ids[:1] if tok("x").input_ids[:1] == [tok.bos_token_id] else []
    return hf_loss(model, ids, lab_q), hf_loss(model, ids, lab_aq), hf_loss(model, bos + r_ids, bos + r_ids)


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    return r


def spearman(x, y) -> float:
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    return float(np.corrcoef(_ranks(x[ok]), _ranks(y[ok]))[0, 1])


def _compare(name: str, alias: str, engine: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> dict:
    out = {"n_pairs": len(PAIRS)}
    abs_d, rel_d = [], []
    for col, r in ref.items():
        e = engine[col]
        assert np.array_equal(np.isnan(e), np.isnan(r)), f"{alias} {name} {col}: NaN pattern differs: {e} vs {r}"
        ok = ~np.isnan(r)
        abs_d.append(np.abs(e[ok] - r[ok]))
        rel_d.append(np.abs(e[ok] - r[ok]) / np.abs(r[ok]))
    out["max_abs_diff"] = float(np.max(np.concatenate(abs_d)))
    out["max_rel_diff"] = float(np.max(np.concatenate(rel_d)))
    ratios = {"ifd": (engine["loss_a_given_q"] / engine["loss_a"], ref["loss_a_given_q"] / ref["loss_a"])}
    if "loss_q" in ref:
        ratios["icifd"] = (engine["loss_a_given_q"] / (engine["loss_q"] * engine["loss_a"]),
                           ref["loss_a_given_q"] / (ref["loss_q"] * ref["loss_a"]))
    for key, (e, r) in ratios.items():
        ok = np.isfinite(r)
        out[f"spearman_{key}"] = spearman(e, r)
        out[f"same_ranking_{key}"] = bool(np.array_equal(np.argsort(-e[ok], kind="stable"),
                                                         np.argsort(-r[ok], kind="stable")))
        out[f"n_ranked_{key}"] = int(ok.sum())
    RESULTS.setdefault(alias, {})[name] = out
    assert out["max_rel_diff"] <= TOL, (alias, name, out)
    for key in ratios:
        assert out[f"same_ranking_{key}"], (alias, name, key, out)
    return out


def _engine(path, convention, max_length=None, inputs=True):
    from teachfit.schema import defaults
    from teachfit.scoring.losses import ScoringSettings, convention_settings, score_pairs

    job = convention_settings(defaults("scoring"), convention)
    if max_length is not None:
        job["max_length"] = max_length
    settings = ScoringSettings.from_dict(job)
    qs = [q for q, _, _ in PAIRS] if inputs else [f"{q}\n\n{i}" if i else q for q, i, _ in PAIRS]
    df = score_pairs(path, qs, [a for _, _, a in PAIRS], settings,
                     inputs=[i for _, i, _ in PAIRS] if inputs else None)
    return df, {c: df[c].to_numpy().astype(float) for c in ("loss_q", "loss_a_given_q", "loss_a")}


def test_evolution_analysis_matches_eval_loss_py(real):
    alias, path, model, tok = real
    _, engine = _engine(path, "evolution_analysis")
    ref = np.array([ref_evolution_analysis(model, tok, q, i, a) for q, i, a in PAIRS])
    _compare("evolution_analysis", alias, engine,
             {"loss_q": ref[:, 0], "loss_a_given_q": ref[:, 1], "loss_a": ref[:, 2]})


@pytest.mark.parametrize("max_length", [512, 128, 64])
def test_cherry_matches_data_analysis_and_data_by_ifd(real, max_length):
    alias, path, model, tok = real
    df, engine = _engine(path, "cherry", max_length=max_length)
    refs = [ref_cherry(model, tok, q, i, a, max_length) for q, i, a in PAIRS]
    dropped = [r is None for r in refs]
    assert df["prompt_overflow"].to_list() == dropped  # the rows data_by_IFD.py skips
    ref = np.array([(math.nan, math.nan) if r is None else r for r in refs])
    out = _compare(f"cherry@{max_length}", alias, {k: engine[k] for k in ("loss_a_given_q", "loss_a")},
                   {"loss_a_given_q": ref[:, 0], "loss_a": ref[:, 1]})
    out["n_truncated"] = int(df["truncated"].sum())
    out["n_prompt_fills_window"] = int(sum(dropped))
    if max_length == 64:  # the short window exercises truncation and the drop
        assert out["n_truncated"] > 0 and out["n_prompt_fills_window"] > 0


def test_chat_matches_its_definition_and_invents_no_start_token(real):
    alias, path, model, tok = real
    _df, engine = _engine(path, "chat", inputs=False)
    qs = [f"{q}\n\n{i}" if i else q for q, i, _ in PAIRS]
    ref = np.array([ref_chat(model, tok, q, a) for q, (_, _, a) in zip(qs, PAIRS, strict=True)])
    out = _compare("chat", alias, engine, {"loss_q": ref[:, 0], "loss_a_given_q": ref[:, 1], "loss_a": ref[:, 2]})
    # what conditioning L(A) on an invented start token (the tokenizer's named bos_token, which it
    # never adds: SmolLM2's "<|im_start|>") did to L(A): the convention fixed by issue 11
    if tok("x").input_ids[:1] != [tok.bos_token_id] and tok.bos_token_id is not None:
        invented = np.array([hf_loss(model, [tok.bos_token_id, *tok(a, add_special_tokens=False).input_ids],
                                     [-100, *tok(a, add_special_tokens=False).input_ids]) for _, _, a in PAIRS])
        out["invented_start_token_max_rel_change_of_loss_a"] = float(np.nanmax(np.abs(invented - ref[:, 2])
                                                                             / ref[:, 2]))


def test_conventions_rank_differently(real):
    """For the record (not a pass/fail criterion): how far the chat convention's IC-IFD / IFD
    rankings are from the references' on the same pairs (issue 11 measured Spearman 0.33)."""
    alias, path, _, _ = real
    _, ea = _engine(path, "evolution_analysis", inputs=False)
    _, ch = _engine(path, "chat", inputs=False)
    _, cy = _engine(path, "cherry", inputs=False)
    icifd = {k: v["loss_a_given_q"] / (v["loss_q"] * v["loss_a"]) for k, v in (("ea", ea), ("chat", ch))}
    ifd = {k: v["loss_a_given_q"] / v["loss_a"] for k, v in (("cherry", cy), ("chat", ch))}
    RESULTS.setdefault(alias, {})["cross_convention"] = {
        "spearman_icifd_chat_vs_evolution_analysis": spearman(icifd["chat"], icifd["ea"]),
        "spearman_ifd_chat_vs_cherry": spearman(ifd["chat"], ifd["cherry"]),
    }


def test_sft_trains_on_the_inference_tokens(real, tmp_path):
    """The real trainer's collated batch: prompt = the inference prompt's ids, completion = the
    response's ids + the end-of-turn token, nothing after (issue 11 item 6)."""
    from teachfit.schema import defaults
    from teachfit.generation.base import encode_prompts, eos_token_ids
    from teachfit.prompts import format_prompt
    from teachfit.training.sft import make_sft_trainer

    alias, path, _, _ = real
    records = [{"id": "0", "instruction": "list two numbers", "response": "\n\none two"},
               {"id": "1", "instruction": "Name a fruit.", "response": " Apple\n"}]
    trainer = make_sft_trainer(path, records, defaults("sft", method="lora"), tmp_path)
    tok = trainer.processing_class
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for i, rec in enumerate(records):
        prompt = encode_prompts(tok, [format_prompt(tok, rec["instruction"], fmt="chat")])[0]
        ids, labels = batch["input_ids"][i].tolist(), batch["labels"][i].tolist()
        assert ids[: len(prompt)] == prompt and set(labels[: len(prompt)]) == {-100}
        supervised = [t for t, lab in zip(ids, labels, strict=True) if lab != -100]
        assert supervised[:-1] == tok(rec["response"], add_special_tokens=False).input_ids
        assert supervised[-1] in eos_token_ids(tok, trainer.model.config)
    RESULTS.setdefault(alias, {})["sft_prompt_equals_inference_prompt"] = True


@pytest.fixture(scope="module", autouse=True)
def write_results():
    """After the module: print the collected agreement numbers (docs/conventions.md, docs/measurements.md) and
    write them to ``$TEACHFIT_FIDELITY_OUT`` when set."""
    yield
    print(json.dumps(RESULTS, indent=2))
    out = os.environ.get("TEACHFIT_FIDELITY_OUT")
    if out and RESULTS:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(RESULTS, indent=2) + "\n")
