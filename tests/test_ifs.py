"""Tests for teachfit.studies.ifs: tone data, classifier (tiny random bert, transformers Trainer),
IFS prompts and formulas, plateau early stopping, and every rule function of the study on files
(answers from a tiny random llama or a fake engine, scores with a fake classifier and judge)."""

from __future__ import annotations

import functools
import json
import math
import shutil
from typing import ClassVar

import numpy as np
import polars as pl
import pytest

from teachfit.schema import defaults
from teachfit.generation.base import Completion
from teachfit.generation.engines import backend_settings
from teachfit.io import DataError, package_data, write_parquet
from teachfit.studies.ifs.answers import answer_ifs_model, answer_ifs_run, score_ifs
from teachfit.studies.ifs.intervals import wilson_interval
from teachfit.studies.ifs.prompts import (
    IfsPromptSettings,
    build_ifs_requests,
    format_ifs_prompt,
    ifs_prompt_set,
    load_ifs_instructions,
    make_ifs_prompts,
)
from teachfit.studies.ifs.scores import (
    PlateauSettings,
    ifs_curve,
    ifs_scores,
    ifs_table,
    select_checkpoint,
    select_plateau_checkpoint,
)
from teachfit.studies.ifs.tone import (
    TONE_MANIFEST,
    ToneClassifierSettings,
    ToneDataSettings,
    binary_metrics,
    classify_responses,
    evaluate_tone_classifier,
    fit_tone_classifier,
    make_tone_data,
    make_tone_dataset,
    split_tone_dataset,
    train_tone_classifier,
)

INS = "Write a short poem about the sea and the moon"  # 10 words
RESP = "Silver light\non rolling waves,\nthe moon keeps watch."


def one_pair(**kw) -> pl.DataFrame:
    return pl.DataFrame({"pair_id": ["p1"], "instruction": [INS], "response": [RESP]}, **kw)


def tone(pairs: pl.DataFrame, seed: int = 0, **settings) -> pl.DataFrame:
    """make_tone_dataset with the schema's ifs.tone_data defaults, ``settings`` overriding."""
    return make_tone_dataset(pairs, defaults("ifs.tone_data", **settings), seed)


def prompt_set(instructions: pl.DataFrame, seed: int = 0, **settings) -> pl.DataFrame:
    s = IfsPromptSettings.from_dict(defaults("ifs.prompts", **settings))
    return ifs_prompt_set(instructions, s.partial_share, s.min_frac, s.max_frac, seed)


# ----------------------------------------------------------------------------- tone data


def test_tone_rule_pinned_on_hand_made_pair_ic():
    df = tone(one_pair(), seed=0, shift_choices=[0.5], ic_share=1.0)
    assert df.height == 2
    r = df.filter(pl.col("kind") == "R").row(0, named=True)
    assert (r["label"], r["cut"], r["text"], r["pair_id"]) == (1, 10, RESP, "p1")
    c = df.filter(pl.col("label") == 0).row(0, named=True)
    # f = 0.5 of 10 words -> k = 5 words kept, cut = 10 - 5 = 5
    assert (c["kind"], c["cut"], c["text"]) == ("Ic", 5, "the sea and the moon")
    assert set(df.columns) >= {"id", "pair_id", "cut", "kind", "label", "text", "split"}


def test_tone_rule_pinned_ic_plus_r_and_clipping():
    df = tone(one_pair(), seed=3, shift_choices=[0.25], ic_share=0.0)
    c = df.filter(pl.col("label") == 0).row(0, named=True)
    # floor(0.25 * 10 + 0.5) = 3 words kept -> cut 7; joiner "\n" then the response
    assert (c["kind"], c["cut"]) == ("Ic+R", 7)
    assert c["text"] == "and the moon\n" + RESP
    # tiny fraction: clipped up to min_fragment_words
    lo = tone(one_pair(), shift_choices=[0.01], ic_share=1.0, min_fragment_words=3).filter(pl.col("label") == 0)
    assert lo["cut"].item() == 7 and lo["text"].item() == "and the moon"
    # f = 1.0: at most n - 1 words, so the text still starts inside the instruction
    hi = tone(one_pair(), shift_choices=[1.0], ic_share=1.0)
    hi = hi.filter(pl.col("label") == 0)
    assert hi["cut"].item() == 1 and hi["text"].item() == INS.split(" ", 1)[1]


def test_tone_rule_keeps_whitespace_and_drops_short_pairs():
    pairs = pl.DataFrame({
        "id": ["a", "b", "c"],
        "instruction": ["List  three\nfruits please now", "Too short", "Name a colour for me"],
        "response": ["Apple, pear, plum.", "Fine answer here.", "Red"],
    })
    df = tone(pairs, shift_choices=[0.5], ic_share=1.0)
    # b: 2 instruction words < 4; c: 1 response word < 2 -> dropped; ids taken from "id"
    assert df["pair_id"].unique().to_list() == ["a"]
    assert df.filter(pl.col("label") == 0)["text"].item() == "fruits please now"


def test_tone_dataset_seeded_balanced_and_order_free():
    rng = np.random.default_rng(1)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"]
    pairs = pl.DataFrame({
        "pair_id": [f"q{i}" for i in range(300)],
        "instruction": [" ".join(rng.choice(words, size=int(rng.integers(4, 12))))
                        for _ in range(300)],
        "response": [" ".join(rng.choice(words, size=6)) for _ in range(300)],
    })
    a = tone(pairs, seed=7)
    b = tone(pairs.reverse(), seed=7)
    c = tone(pairs, seed=8)
    assert a.height == 600 and a["label"].sum() == 300
    key = ["pair_id", "kind"]
    assert a.sort(key).equals(b.sort(key))  # row order does not change any pair's draw
    assert not a.sort(key)["kind"].equals(c.sort(key)["kind"])  # the seed matters
    kinds = a.filter(pl.col("label") == 0)["kind"].value_counts()
    share_ic = kinds.filter(pl.col("kind") == "Ic")["count"].item() / 300
    assert 0.38 < share_ic < 0.62
    # split by pair hash: both rows of a pair share a split; both splits occur
    per_pair = a.group_by("pair_id").agg(pl.col("split").n_unique())
    assert per_pair["split"].max() == 1
    held = a.filter(pl.col("split") == "heldout")["pair_id"].n_unique() / 300
    assert 0.1 < held < 0.3
    assert set(a.filter(pl.col("split") == "heldout")["pair_id"]) == set(
        c.filter(pl.col("split") == "heldout")["pair_id"])  # seed-independent split
    tr, ho = split_tone_dataset(a)
    assert not set(tr["pair_id"]) & set(ho["pair_id"])


def test_tone_settings_reject_unknown_and_bad_values():
    with pytest.raises(ValueError, match="shift_choice.*allowed keys"):
        ToneDataSettings.from_dict({"shift_choice": [0.5]})
    with pytest.raises(ValueError, match="min_instruction_words"):
        ToneDataSettings.from_dict(defaults("ifs.tone_data", min_instruction_words=2, min_fragment_words=2))
    with pytest.raises(ValueError, match="learning_rte"):
        ToneClassifierSettings.from_dict({"learning_rte": 1e-4})
    with pytest.raises(TypeError, match="heldout_share"):  # no field re-declares a config default
        ToneDataSettings.from_dict({k: v for k, v in defaults("ifs.tone_data").items() if k != "heldout_share"})
    with pytest.raises(DataError, match="duplicate pair id"):
        tone(pl.concat([one_pair(), one_pair()]))
    s = ToneDataSettings.from_dict(defaults("ifs.tone_data", shift_choices=[0.5], ic_share=1.0))
    out = make_tone_dataset(one_pair(), s, seed=0)
    assert out.filter(pl.col("label") == 0)["kind"].item() == "Ic"


# ----------------------------------------------------------------------------- classifier


def test_binary_metrics_hand_made():
    m = binary_metrics([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["n"] == 5 and m["n_positive"] == 3
    assert m["confusion"] == {"tn": 1, "fp": 1, "fn": 1, "tp": 2}
    z = binary_metrics([0, 0], [0, 0])
    assert z["precision"] == 0.0 and z["accuracy"] == 1.0 and z["confusion"]["tn"] == 2
    with pytest.raises(ValueError, match="no labels"):
        binary_metrics([], [])
    with pytest.raises(ValueError, match="predictions"):
        binary_metrics([1], [1, 0])


@pytest.fixture(scope="module")
def tinybert(tmp_path_factory):
    from teachfit.models import materialize

    d = tmp_path_factory.mktemp("tinybert") / "tinybert"
    materialize("tinybert", {"source": "random", "arch": "bert", "task": "seq_cls"}, d)
    return d


def clf_settings(**kw) -> dict:
    return defaults("ifs.classifier", encoder="tinybert", **kw)


def _separable(n: int, seed: int) -> pl.DataFrame:
    """Answers are sentences of digits/answer words; continuations of instruction words."""
    rng = np.random.default_rng(seed)
    pos = ["answer", "the", "sum", "is", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "equals", "total"]
    neg = ["write", "explain", "list", "give", "example", "question", "how", "what", "make", "find"]
    texts, labels = [], []
    for i in range(n):
        y = i % 2
        texts.append(" ".join(rng.choice(pos if y else neg, size=8)))
        labels.append(y)
    return pl.DataFrame({"text": texts, "label": labels})


@pytest.fixture(scope="module")
def trained(tinybert, tmp_path_factory):
    """A tiny classifier fitted with transformers.Trainer on separable texts."""
    out = tmp_path_factory.mktemp("clf") / "clf"
    train = _separable(96, 0).with_columns(pl.lit("train").alias("split"))
    s = clf_settings(epochs=4, learning_rate=1e-3, batch_size=16, max_length=32, warmup_ratio=0.0)
    man = fit_tone_classifier(tinybert, train, out, s, seed=0, device="cpu")
    return out, man, train, s


def test_train_and_evaluate_tiny_classifier(trained, tmp_path):
    clf, man, train, s = trained
    assert man["epoch_losses"][-1] < man["epoch_losses"][0]
    assert len(man["epoch_losses"]) == 4 and man["steps"] == 4 * math.ceil(96 / 16)
    assert man["n_train"] == 96 and man["seed"] == 0 and man["settings"]["encoder"] == "tinybert"
    # the folder layout: model, tokenizer and manifest only (no Trainer state), written atomically
    files = {p.name for p in clf.iterdir()}
    assert {"config.json", "model.safetensors", TONE_MANIFEST, "tokenizer_config.json"} <= files
    assert not {"training_args.bin", "trainer_state.json"} & files
    assert not any(p.name.startswith(".") for p in clf.parent.iterdir())
    held = _separable(40, 1).with_columns(pl.lit("R").alias("kind"))
    met = evaluate_tone_classifier(clf, held, device="cpu")
    for key in ("accuracy", "precision", "recall", "f1"):
        assert 0.0 <= met[key] <= 1.0
    assert met["n"] == 40 and met["accuracy"] > 0.75 and met["by_kind"]["R"]["n"] == 40
    assert sum(met["confusion"].values()) == 40
    probs, labels = classify_responses(clf, ["", "the sum is 4", "   "], device="cpu")
    assert probs.shape == (3,) and labels.tolist()[0] == 0 and labels.tolist()[2] == 0
    assert 0.0 <= probs[1] <= 1.0
    # determinism: same seed, same losses
    man2 = fit_tone_classifier(man["encoder_dir"], train,
                               tmp_path / "clf2", s, seed=0, device="cpu")
    assert man2["epoch_losses"] == pytest.approx(man["epoch_losses"])


def test_train_refuses_heldout_rows(tinybert, tmp_path):
    df = _separable(8, 0).with_columns(pl.Series("split", ["train"] * 6 + ["heldout"] * 2))
    with pytest.raises(DataError, match="heldout"):
        fit_tone_classifier(tinybert, df, tmp_path / "x", clf_settings(epochs=1), seed=0)
    one_label = _separable(8, 0).filter(pl.col("label") == 1)
    with pytest.raises(DataError, match="both labels"):
        fit_tone_classifier(tinybert, one_label, tmp_path / "x", clf_settings(epochs=1), seed=0)
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- prompts


def test_prompt_formats_exact():
    assert format_ifs_prompt("Name a fruit", "none") == "Name a fruit"
    assert format_ifs_prompt("Name a fruit", "suffix") == "Name a fruit\n\n### Response:"
    assert format_ifs_prompt("Name a fruit", "alpaca") == (
        "Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n### Instruction:\nName a fruit\n\n### Response:"
    )
    with pytest.raises(ValueError, match="allowed: none, suffix, alpaca"):
        format_ifs_prompt("x", "chatml")


def test_packaged_ifs_instructions_and_prompt_set():
    ins = load_ifs_instructions()
    assert ins.height >= 80 and ins["id"].n_unique() == ins.height and ins["instruction"].n_unique() == ins.height
    p = prompt_set(ins, seed=0)
    assert p.height == ins.height
    assert p.filter(pl.col("variant") == "partial").height == math.floor(ins.height / 2 + 0.5)
    # the default set measures each variant on at least 40 prompts (issue 16)
    assert p.group_by("variant").len().filter(pl.col("len") >= 40).height == 2
    full = dict(zip(ins["id"], ins["instruction"]))
    for r in p.iter_rows(named=True):
        src = full[r["source_id"]]
        if r["variant"] == "full":
            assert r["text"] == src.strip()
        else:
            assert src.startswith(r["text"]) and len(r["text"]) < len(src)
            assert 1 <= r["kept_words"] < r["n_words"]
            assert len(r["text"].split()) == r["kept_words"]
            assert 0.3 - 0.5 / r["n_words"] <= r["kept_words"] / r["n_words"] <= 0.7 + 0.5 / r["n_words"]
    assert p.equals(prompt_set(ins.reverse(), seed=0))
    assert not p["variant"].equals(prompt_set(ins, seed=1)["variant"])
    req = build_ifs_requests(p, ["none", "alpaca"])
    assert req.height == 2 * p.height and set(req["fmt"]) == {"none", "alpaca"}


def test_partial_prompt_cut_pinned():
    df = pl.DataFrame({"id": ["a"], "instruction": ["one two three four five six seven eight nine ten"]})
    p = prompt_set(df, seed=0, partial_share=1.0, min_frac=0.5, max_frac=0.5)
    assert p.row(0, named=True) == {"id": "a__partial", "source_id": "a", "variant": "partial",
                                    "text": "one two three four five", "n_words": 10,
                                    "kept_words": 5}
    none = prompt_set(df, seed=0, partial_share=0.0)
    assert none["variant"].to_list() == ["full"]
    with pytest.raises(ValueError, match="min_frac"):
        IfsPromptSettings.from_dict(defaults("ifs.prompts", min_frac=0.6, max_frac=0.5))


# ----------------------------------------------------------------------------- IFS formulas


def test_ifs_scores_hand_made():
    df = pl.DataFrame({"variant": ["full"] * 4 + ["partial"] * 6,
                       "label": [1, 1, 1, 0] + [1, 0, 0, 0, 0, 1]})
    s = ifs_scores(df)
    assert s["ifs"] == pytest.approx(5 / 10)
    assert s["ifs_full"] == pytest.approx(3 / 4)
    assert s["ifs_partial"] == pytest.approx(2 / 6)
    assert (s["n"], s["n_full"], s["n_partial"]) == (10, 4, 6)
    only_full = ifs_scores(df.filter(pl.col("variant") == "full"))
    assert math.isnan(only_full["ifs_partial"]) and only_full["ifs"] == pytest.approx(0.75)
    with pytest.raises(DataError, match="label"):
        ifs_scores(pl.DataFrame({"variant": ["full"], "label": [2]}))
    with pytest.raises(DataError, match="variant"):
        ifs_scores(pl.DataFrame({"variant": ["whole"], "label": [1]}))


def test_ifs_table_per_model_and_format():
    df = pl.DataFrame({
        "model": ["base"] * 4 + ["sft"] * 4,
        "fmt": ["none", "none", "alpaca", "alpaca"] * 2,
        "variant": ["full", "partial"] * 4,
        "label": [0, 0, 1, 0, 1, 0, 1, 1],
    })
    t = ifs_table(df)
    assert t.select("model", "fmt").rows() == [("base", "alpaca"), ("base", "none"),
                                               ("sft", "alpaca"), ("sft", "none")]
    assert t["ifs"].to_list() == [0.5, 0.0, 1.0, 0.5]
    assert t["ifs_partial"].to_list() == [0.0, 0.0, 1.0, 0.0]


# ----------------------------------------------------------------------------- plateau


S = lambda n: list(range(100, 100 * (n + 1), 100))


def plateau(vals, hw=0.0, epsilon=0.02, min_later=1):
    hws = hw if isinstance(hw, list) else [hw] * len(vals)
    return select_plateau_checkpoint(S(len(vals)), vals, hws, epsilon=epsilon, min_later=min_later)


def test_plateau_rule_pinned():
    # still rising at every checkpoint by more than epsilon: none found, the last is returned
    c = plateau([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], epsilon=0.05)
    assert (c.index, c.step, c.plateau_found) == (5, 600, False) and math.isnan(c.best_later)
    # the first checkpoint within epsilon of the best LATER value (not just the next one)
    c = plateau([0.2, 0.8, 0.79, 0.8, 0.86, 0.81], epsilon=0.05)
    assert (c.index, c.ifs, c.plateau_found, c.best_later) == (4, 0.86, True, 0.81)
    c = plateau([0.2, 0.8, 0.81, 0.8, 0.84, 0.81], epsilon=0.05)
    assert (c.index, c.tolerance, c.best_later) == (1, 0.05, 0.84)
    # a gap equal to the tolerance is within it (<=)
    assert plateau([0.5, 0.75, 0.75], epsilon=0.25).index == 0
    # the tolerance is the larger of epsilon and the checkpoint's half-width
    c = plateau([0.5, 0.6, 0.6], hw=[0.11, 0.0, 0.0], epsilon=0.02)
    assert (c.index, c.tolerance) == (0, 0.11)
    assert plateau([0.5, 0.6, 0.6], hw=[0.05, 0.0, 0.0], epsilon=0.02).index == 1
    # min_later: a candidate needs that many later checkpoints
    assert plateau([0.7, 0.7, 0.7], min_later=2).index == 0
    c = plateau([0.1, 0.7, 0.7], min_later=2)
    assert (c.index, c.plateau_found) == (2, False)
    one = select_plateau_checkpoint([50], [0.4], [0.1], 0.01, 1)
    assert (one.index, one.step, one.plateau_found) == (0, 50, False)


def test_plateau_nans_and_errors():
    # the NaN checkpoint is skipped: neither a candidate nor a later value
    c = plateau([0.1, float("nan"), 0.6, 0.61, 0.6], epsilon=0.05)
    assert (c.index, c.plateau_found) == (2, True)
    c = plateau([0.2, 0.5, float("nan")], epsilon=0.05)
    assert (c.index, c.plateau_found) == (1, False)
    with pytest.raises(ValueError, match="NaN"):
        plateau([float("nan")] * 2)
    with pytest.raises(ValueError, match="increasing"):
        select_plateau_checkpoint([2, 1], [0.1, 0.2], [0, 0], 0.05, 1)
    with pytest.raises(ValueError, match="epsilon"):
        select_plateau_checkpoint([1, 2], [0.1, 0.2], [0, 0], 0.0, 1)
    with pytest.raises(ValueError, match="min_later"):
        select_plateau_checkpoint([1, 2], [0.1, 0.2], [0, 0], 0.1, 0)
    with pytest.raises(ValueError, match="half-widths"):
        select_plateau_checkpoint([1, 2], [0.1, 0.2], [0.1], 0.1, 1)


# Synthetic curves: a checkpoint's IFS is the share of answer-like labels over N_PROMPTS
# prompts, drawn as Binomial(N_PROMPTS, true IFS); the rule sees what the pipeline sees (the
# share and its Wilson interval from ifs_scores).
N_PROMPTS = 80  # the default prompt set: 40 partial + 40 full


def _observed(true_ifs: list[float], rng: np.random.Generator) -> tuple[list[float], list[float]]:
    """Observed IFS and half-widths of the Wilson interval ifs_scores attaches (tested there)."""
    vals, hws = [], []
    for p in true_ifs:
        k = int(rng.binomial(N_PROMPTS, p))
        lo, hi = wilson_interval(k, N_PROMPTS)
        vals.append(k / N_PROMPTS)
        hws.append((hi - lo) / 2)
    return vals, hws


@functools.cache
def _default_rule() -> tuple[float, int]:
    es = defaults("ifs.early_stopping")
    return es["epsilon"], es["min_later"]


def _selected_true(true_ifs: list[float], seed: int) -> tuple[int, bool]:
    """The default rule's choice on one noisy draw of ``true_ifs``."""
    vals, hws = _observed(true_ifs, np.random.default_rng(seed))
    c = select_plateau_checkpoint(S(len(vals)), vals, hws, *_default_rule())
    return c.index, c.plateau_found


def _old_rule(vals: list[float], epsilon: float = 0.02, k: int = 2) -> int:
    """The replaced rule: first i with max(IFS[i+1..i+k]) - IFS[i] < epsilon (next k only)."""
    for i in range(len(vals) - k):
        if max(vals[i + 1:i + 1 + k]) - vals[i] < epsilon:
            return i
    return len(vals) - 1


def test_plateau_on_a_noisy_flat_curve_stops_early():
    """True IFS 0.5 at all 12 checkpoints: the plateau is there from the first checkpoint. Noise
    (the best of 11 later values is biased upwards) may delay the stop by a checkpoint or two,
    but the rule must stop early and report a plateau."""
    flat = [0.5] * 12
    picks = [_selected_true(flat, seed) for seed in range(200)]
    assert all(found for _, found in picks)
    idx = np.array([i for i, _ in picks])
    assert (idx == 0).mean() >= 0.5 and (idx <= 2).mean() >= 0.85 and idx.mean() < 1.5


def test_plateau_on_noisy_rising_curves_is_not_triggered_by_dips():
    """Rising curves drawn with 80 prompts per checkpoint: the rule must not stop on the rise at
    a noisy dip. The former next-k rule (epsilon 0.02, k 2) did so on a slow rise."""
    fast = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.9, 0.9, 0.9]
    picked = np.array([fast[_selected_true(fast, seed)[0]] for seed in range(200)])
    assert (picked >= 0.7).all() and (picked >= 0.8).mean() >= 0.97
    # a slow rise of 0.05 per checkpoint (below the noise of one checkpoint, about 0.056 sd)
    slow = [0.3 + 0.05 * i for i in range(12)]
    new, old = [], []
    for seed in range(200):
        new.append(_selected_true(slow, seed)[0])
        old.append(_old_rule(_observed(slow, np.random.default_rng(seed))[0]))
    new, old = np.array(new), np.array(old)
    # index 8 = true IFS 0.70, 0.15 below the end of the rise (0.85); index 5 = 0.55
    assert (new < 8).mean() <= 0.1 and new.min() >= 5
    assert (old < 8).mean() >= 0.4  # the former rule often stopped half-way up


def test_plateau_on_a_clean_plateau_picks_its_first_checkpoint():
    """No noise (exact values, intervals from 80 prompts): 0.2, 0.5, 0.8, 0.9, 0.9, 0.9 stops at
    the first 0.9 (0.8 is 0.1 below the best later value, more than its 0.087 half-width)."""
    curve = [0.2, 0.5, 0.8, 0.9, 0.9, 0.9]
    hws = []
    for p in curve:
        k = round(p * N_PROMPTS)
        sc = ifs_scores(pl.DataFrame({"variant": ["full"] * N_PROMPTS, "label": [1] * k + [0] * (N_PROMPTS - k)}))
        hws.append((sc["ifs_hi"] - sc["ifs_lo"]) / 2)
    assert hws[2] == pytest.approx(0.0867, abs=5e-4)
    c = select_plateau_checkpoint(S(6), curve, hws, 0.02, 1)
    assert (c.index, c.plateau_found) == (3, True)
    # the issue's case: 8 prompts, IFS_partial 0.5 -> 0.0 -> 0.5 ...: the interval at n=8 is
    # wider than any of these gaps, so no later checkpoint clearly beats the first
    c = select_plateau_checkpoint(S(4), [0.5, 0.0, 0.5, 0.0], [0.33] * 4, 0.02, 1)
    assert c.index == 0


def _run_scores(curve: list[float], objecqa: list[float], n: int = 100) -> pl.DataFrame:
    """A score_ifs table of one run: checkpoint i (step 10(i+1)) has IFS = curve[i] over n
    prompts (alternately full / partial) and ObjecQA = objecqa[i] over 10 questions (the raw
    judge calls one fewer objective)."""
    frames = []
    for i, (v, o) in enumerate(zip(curve, objecqa)):
        ones = round(v * n)
        obj = round(o * 10)
        frames.append(pl.DataFrame({
            "id": [f"p{j}" for j in range(n)] + [f"q{j}" for j in range(10)],
            "task": ["ifs"] * n + ["objecqa"] * 10,
            "variant": [("full", "partial")[j % 2] for j in range(n)] + [None] * 10,
            "label": [1] * ones + [0] * (n - ones) + [None] * 10,
            "judge_label": [None] * n + ["objective"] * obj + ["subjective"] * (10 - obj),
            "judge_label_raw": [None] * n + ["objective"] * max(obj - 1, 0) + ["subjective"] * (10 - max(obj - 1, 0)),
        }).with_columns(pl.lit(f"checkpoint-{10 * (i + 1)}").alias("checkpoint"),
                        pl.lit(10 * (i + 1)).alias("step"), pl.lit(80 * (i + 1)).alias("examples_seen")))
    return pl.concat(list(reversed(frames)))  # any row order


TRAIN_LOG = pl.DataFrame({"step": [5, 10, 15, 20, 25, 30, 40], "loss": [2.0, 1.9, None, 1.7, 1.6, 1.5, 1.4],
                          "num_tokens": [500.0, 1000.0, 1500.0, 2000.0, 2500.0, 3000.0, 4000.0]})


def test_select_checkpoint_curve_and_plateau_per_run(tmp_path):
    es = defaults("ifs.early_stopping", epsilon=0.05, min_later=1)
    write_parquet(TRAIN_LOG, tmp_path / "log.parquet")
    got = {}
    for run, curve in {"r2": [0.1, 0.3, 0.5, 0.7], "r1": [0.2, 0.9, 0.91, 0.9]}.items():
        write_parquet(_run_scores(curve, [0.9, 0.8, 0.7, 0.6]), tmp_path / f"{run}.parquet")
        meta = {"dataset": "d", "generator": "g", "selection": "full", "base": run}
        sel = select_checkpoint(tmp_path / f"{run}.parquet", tmp_path / "log.parquet",
                                tmp_path / f"{run}.selected.json", tmp_path / f"{run}.curve.parquet", es, meta)
        assert json.loads((tmp_path / f"{run}.selected.json").read_text()) == sel
        got[run] = (sel, pl.read_parquet(tmp_path / f"{run}.curve.parquet"))
    assert {r: (s["step"], s["plateau_found"]) for r, (s, _) in got.items()} == {"r1": (20, True), "r2": (40, False)}
    sel, c = got["r1"]
    hw = (c["ifs_hi"][1] - c["ifs_lo"][1]) / 2
    assert sel == {"step": 20, "checkpoint": "checkpoint-20", "plateau_found": True, "ifs": 0.9,
                   "tolerance": pytest.approx(hw), "best_later_ifs": 0.91, "epsilon": 0.05, "min_later": 1,
                   "dataset": "d", "generator": "g", "selection": "full", "base": "r1"}
    assert c.columns == ["checkpoint", "step", "examples_seen", "num_tokens",
                         "ifs", "ifs_lo", "ifs_hi", "ifs_partial", "ifs_partial_lo", "ifs_partial_hi",
                         "ifs_full", "ifs_full_lo", "ifs_full_hi", "n", "n_partial", "n_full",
                         "objecqa", "objecqa_lo", "objecqa_hi", "objecqa_raw", "objecqa_raw_lo", "objecqa_raw_hi",
                         "n_objecqa", "train_loss", "tolerance", "best_later_ifs", "selected", "plateau_found",
                         "dataset", "generator", "selection", "base"]
    assert c["step"].to_list() == [10, 20, 30, 40] and c["selected"].to_list() == [False, True, False, False]
    assert c["ifs"].to_list() == pytest.approx([0.2, 0.9, 0.91, 0.9])
    assert c["objecqa"].to_list() == pytest.approx([0.9, 0.8, 0.7, 0.6])
    assert c["objecqa_raw"].to_list() == pytest.approx([0.8, 0.7, 0.6, 0.5])
    assert c["num_tokens"].to_list() == [1000.0, 2000.0, 3000.0, 4000.0]
    assert c["best_later_ifs"].to_list()[:3] == pytest.approx([0.91, 0.91, 0.9]) and math.isnan(c["best_later_ifs"][3])
    # every share inside its interval; the interval of 0.9 over 100 prompts is Wilson's (0.826, 0.945)
    for m in ("ifs", "ifs_partial", "ifs_full", "objecqa", "objecqa_raw"):
        assert (c[f"{m}_lo"] <= c[m]).all() and (c[m] <= c[f"{m}_hi"]).all()
    assert (c["ifs_lo"][1], c["ifs_hi"][1]) == pytest.approx((0.8256, 0.9448), abs=1e-4)
    # the last logged (non-null) loss at or before each step
    assert c["train_loss"].to_list() == pytest.approx([1.9, 1.7, 1.5, 1.4])


def test_ifs_curve_errors_and_settings(caplog):
    scores = _run_scores([0.5, 0.6], [0.5, 0.5])
    es = defaults("ifs.early_stopping")
    dup = scores.with_columns(pl.lit(10).alias("step"))
    with pytest.raises(DataError, match="share a step"):
        ifs_curve(dup, TRAIN_LOG, es)
    curve, choice = ifs_curve(scores, pl.DataFrame({"step": [1]}), es)  # no loss / tokens: NaN, logged
    assert all(math.isnan(x) for x in curve["train_loss"]) and all(math.isnan(x) for x in curve["num_tokens"])
    # 0.6 - 0.5 exceeds 0.5's half-width over 100 prompts (0.096): no plateau, the last checkpoint
    assert "no num_tokens" in caplog.text and (choice.index, choice.plateau_found) == (1, False)
    with pytest.raises(DataError, match="judge_label_raw"):
        ifs_curve(scores.drop("judge_label_raw"), TRAIN_LOG, es)
    with pytest.raises(ValueError, match="allowed keys"):
        PlateauSettings.from_dict({"eps": 0.1})
    with pytest.raises(ValueError, match="allowed keys"):  # the former look-ahead window is gone
        PlateauSettings.from_dict({"epsilon": 0.1, "min_later": 1, "k": 2})
    with pytest.raises(ValueError, match="epsilon"):
        PlateauSettings.from_dict({"epsilon": 0.0, "min_later": 2})
    with pytest.raises(TypeError, match="min_later"):  # no field re-declares a config default
        PlateauSettings.from_dict({"epsilon": 0.1})


# ----------------------------------------------------------------------------- rule functions


def test_make_tone_data_and_prompts_on_files(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    with pairs.open("w") as fh:
        for i in range(20):
            fh.write(json.dumps({"id": f"s{i}", "instruction": f"Please list {i} nice things about the moon",
                                 "response": f"Here are {i} things: it is bright."}) + "\n")
    settings = defaults("ifs.tone_data", heldout_share=0.5)
    df = make_tone_data([str(pairs)], tmp_path / "tone.parquet", settings, seed=0)
    assert df.height == 40 and pl.read_parquet(tmp_path / "tone.parquet").equals(df)
    assert set(df["pair_id"]) == {f"s{i}" for i in range(20)}
    assert set(df["split"]) == {"train", "heldout"}
    # the same pairs twice (another generator): de-duplicated; ids repeat -> content ids
    again = make_tone_data([str(pairs), str(pairs)], tmp_path / "tone2.parquet", settings, seed=0)
    assert again.height == 40
    # no id column: pair ids are content hashes of the two texts (unique per pair)
    no_id = tmp_path / "no_id.jsonl"
    no_id.write_text("".join(json.dumps({"instruction": f"Please list {i} nice things about the moon",
                                         "response": "Here they are, all bright."}) + "\n" for i in range(5)))
    out = make_tone_data([str(no_id)], tmp_path / "t2.parquet", defaults("ifs.tone_data"), seed=0)
    assert out["pair_id"].n_unique() == 5
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "s0", "instruction": "a b c d e", "output": "x y"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl: .*missing \['response'\]"):
        make_tone_data([str(bad)], tmp_path / "x.parquet", defaults("ifs.tone_data"), seed=0)
    assert not (tmp_path / "x.parquet").exists()

    source = str(package_data("ifs_prompts.jsonl"))
    prompts = make_ifs_prompts(source, tmp_path / "prompts.parquet", defaults("ifs.prompts"), seed=0)
    assert pl.read_parquet(tmp_path / "prompts.parquet").equals(prompts)
    assert prompts["id"].n_unique() == prompts.height == 80
    assert prompts.equals(prompt_set(load_ifs_instructions(), seed=0))
    assert make_ifs_prompts(source, tmp_path / "p10.parquet", defaults("ifs.prompts", limit=10), seed=0).height == 10
    req = build_ifs_requests(prompts, ["none", "suffix"])
    assert req.select("id", "fmt").n_unique() == req.height == 2 * 80
    with pytest.raises(ValueError, match="formats"):
        IfsPromptSettings.from_dict(defaults("ifs.prompts") | {"formats": ["chat"]})


def test_train_tone_classifier_rule(tinybert, tmp_path):
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    pairs = pl.DataFrame({"pair_id": [f"p{i}" for i in range(30)],
                          "instruction": [" ".join(words[i % 4:i % 4 + 5]) for i in range(30)],
                          "response": ["the answer is " + str(i) for i in range(30)]})
    data = tone(pairs, heldout_share=0.3)
    write_parquet(data, tmp_path / "tone.parquet")
    row = train_tone_classifier(tmp_path / "tone.parquet", tinybert, tmp_path / "clf", tmp_path / "metrics.csv",
                                clf_settings(epochs=1, batch_size=8, max_length=16), seed=0)
    saved = pl.read_csv(tmp_path / "metrics.csv")
    assert saved.columns == ["accuracy", "accuracy_lo", "accuracy_hi", "precision", "recall", "f1",
                             "tn", "fp", "fn", "tp", "accuracy_R", "accuracy_Ic", "accuracy_Ic+R", "n",
                             "n_heldout_pairs", "n_train", "n_train_pairs", "encoder", "epochs", "learning_rate",
                             "batch_size", "final_train_loss", "paper_accuracy", "paper_precision", "paper_recall"]
    saved = saved.row(0, named=True)
    held = data.filter(pl.col("split") == "heldout")
    assert saved["n"] == held.height == row["n"] > 0
    assert saved["n_train"] == data.height - held.height
    assert (saved["n_heldout_pairs"], saved["n_train_pairs"]) == (held["pair_id"].n_unique(), 30 - held["pair_id"].n_unique())
    assert saved["tn"] + saved["fp"] + saved["fn"] + saved["tp"] == saved["n"]
    assert saved["accuracy"] == pytest.approx((saved["tn"] + saved["tp"]) / saved["n"])
    assert saved["accuracy_lo"] <= saved["accuracy"] <= saved["accuracy_hi"]
    assert (saved["paper_accuracy"], saved["paper_precision"], saved["paper_recall"]) == (0.970, 0.983, 0.925)
    assert (saved["epochs"], saved["batch_size"]) == (1, 8)
    assert 0.0 <= saved["accuracy"] <= 1.0 and (tmp_path / "clf" / TONE_MANIFEST).exists()


@pytest.fixture(scope="module")
def ifs_files(tmp_path_factory):
    """A 4-prompt IFS set (2 full, 2 partial) and a 3-question ObjecQA file."""
    d = tmp_path_factory.mktemp("ifs_files")
    ins = pl.DataFrame({"id": ["a", "b", "c", "d"],
                        "instruction": ["Name three fruits please", "Say hi to me now", "List two big rivers",
                                        "Describe the moon in words"]})
    write_parquet(prompt_set(ins, seed=0), d / "prompts.parquet")
    q = d / "objecqa.jsonl"
    q.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Is tea better than coffee {i}?",
                                     "topic": "food"}) + "\n" for i in range(3)))
    return d / "prompts.parquet", q


def tiny_backend(**kw) -> dict:
    entry = defaults("models.*", source="random", arch="llama", kind="instruct", **kw)
    return backend_settings(entry, defaults("generation", batch_size=4))


def test_answer_ifs_model_with_a_tiny_model(tiny_llama, ifs_files, tmp_path):
    prompts, questions = ifs_files
    out = answer_ifs_model(prompts, questions, tiny_llama, tmp_path / "ans.parquet",
                           defaults("ifs.prompts", max_new_tokens=4), defaults("ifs.objecqa", max_new_tokens=3),
                           tiny_backend(), seed=0, threads=1)
    assert pl.read_parquet(tmp_path / "ans.parquet").equals(out)
    assert out.columns == ["id", "variant", "fmt", "prompt", "response", "task", "question",
                           "model", "checkpoint", "step", "examples_seen"]
    ifs = out.filter(pl.col("task") == "ifs")
    assert ifs.height == 4 * 3 and set(ifs["fmt"]) == {"none", "suffix", "alpaca"}
    assert ifs.filter(pl.col("fmt") == "suffix")["prompt"].str.ends_with("### Response:").all()
    obj = out.filter(pl.col("task") == "objecqa")
    assert obj.height == 3 and set(obj["fmt"]) == {"chat"} and obj["question"][0] == "Is tea better than coffee 0?"
    assert set(out["model"]) == {"tiny_llama"} and set(out["checkpoint"]) == {"base"}
    # ObjecQA off, limit on
    off = answer_ifs_model(prompts, questions, tiny_llama, tmp_path / "a2.parquet",
                           defaults("ifs.prompts", max_new_tokens=2, formats=["none"]),
                           defaults("ifs.objecqa", activate=False), tiny_backend(), seed=0)
    assert set(off["task"]) == {"ifs"} and off.height == 4
    with pytest.raises(ValueError, match="chat endpoint"):
        answer_ifs_model(prompts, questions, tiny_llama, tmp_path / "a3.parquet", defaults("ifs.prompts"),
                         defaults("ifs.objecqa"), tiny_backend(backend="openai", api_base="http://x", api_model="m"),
                         seed=0)


def test_answer_ifs_run_every_checkpoint(tiny_llama, ifs_files, tmp_path):
    """A fake full fine-tuning run whose two checkpoints are the tiny model itself."""
    prompts, questions = ifs_files
    sft = tmp_path / "sft"
    for step in (2, 4):
        shutil.copytree(tiny_llama, sft / f"checkpoint-{step}")
    (sft / "checkpoints.json").write_text(json.dumps([
        {"step": 4, "examples_seen": 16, "path": "checkpoint-4"},
        {"step": 2, "examples_seen": 8, "path": "checkpoint-2"}]))
    out = answer_ifs_run(prompts, questions, tiny_llama, sft, tmp_path / "ans.parquet",
                         defaults("ifs.prompts", max_new_tokens=3), defaults("ifs.objecqa", limit=2, max_new_tokens=2),
                         tiny_backend(), threads=1)
    assert out["checkpoint"].unique(maintain_order=True).to_list() == ["checkpoint-2", "checkpoint-4"]
    assert out.filter(pl.col("checkpoint") == "checkpoint-4")["examples_seen"].unique().to_list() == [16]
    ifs = out.filter(pl.col("task") == "ifs")
    assert ifs.height == 2 * 4 and set(ifs["fmt"]) == {"chat"}
    assert out.filter(pl.col("task") == "objecqa").height == 2 * 2
    # greedy decoding of the same weights: both checkpoints answer alike
    a, b = (ifs.filter(pl.col("checkpoint") == c)["response"].to_list() for c in ("checkpoint-2", "checkpoint-4"))
    assert a == b


def _lora_run(tiny_llama, sft, steps=(2, 4)) -> None:
    """A fake LoRA run: one random adapter per checkpoint (non-zero B, so each changes the model)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    entries = []
    for i, step in enumerate(steps):
        torch.manual_seed(10 + i)
        base = AutoModelForCausalLM.from_pretrained(str(tiny_llama), dtype=torch.float32)
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=32, target_modules="all-linear",
                                                init_lora_weights=False))
        model.save_pretrained(str(sft / f"checkpoint-{step}"))
        entries.append({"step": step, "examples_seen": 4 * step, "path": f"checkpoint-{step}"})
    (sft / "checkpoints.json").write_text(json.dumps(entries))


def test_answer_ifs_run_reuses_the_base_under_lora_checkpoints(tiny_llama, ifs_files, tmp_path, monkeypatch):
    """The base is read once and each adapter goes onto it in turn: the answers equal those of
    each checkpoint loaded afresh (load_for_inference), and differ between the two adapters."""
    from transformers import AutoModelForCausalLM

    from teachfit.generation.base import SamplingConfig
    from teachfit.generation.hf import TransformersBackend
    from teachfit.prompts import format_prompt
    from teachfit.checkpoints import load_for_inference

    prompts, questions = ifs_files
    sft = tmp_path / "sft"
    _lora_run(tiny_llama, sft)
    loads = []
    real = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    out = answer_ifs_run(prompts, questions, tiny_llama, sft, tmp_path / "ans.parquet",
                         defaults("ifs.prompts", max_new_tokens=6), defaults("ifs.objecqa", activate=False),
                         tiny_backend(), threads=1)
    assert loads == [str(tiny_llama)]  # one read of the base for two checkpoints
    monkeypatch.undo()
    texts = pl.read_parquet(prompts)["text"].to_list()
    fresh = {}
    for step in (2, 4):
        model, tok = load_for_inference(sft / f"checkpoint-{step}", tiny_llama)
        eng = TransformersBackend.from_loaded(model, tok, batch_size=4, threads=1)
        chat = [format_prompt(tok, t, fmt="chat") for t in texts]
        fresh[step] = [c[0].text for c in eng.generate(chat, SamplingConfig(temperature=0.0, max_new_tokens=6))]
        got = out.filter(pl.col("step") == step)["response"].to_list()
        assert got == fresh[step]
    assert fresh[2] != fresh[4]


class FakeEngine:
    """Answers " Sure: apples.\\n" after "### Response:", a padded answer to ObjecQA, "" otherwise."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls = []

    def generate(self, prompts, sampling, desc=""):
        assert sampling.temperature == 0.0
        self.calls.append((list(prompts), sampling.max_new_tokens))
        out = []
        for p in prompts:
            text = " Sure: apples.\n" if p.endswith("### Response:") else ("\n  Apples.  " if "Is tea" in p else "")
            out.append([Completion(text=text, token_ids=[], finish_reason="stop")])
        return out


class FakeClassifier:
    seen: ClassVar[list[str]] = []

    def __init__(self, model_dir, device=None):
        pass

    def predict_proba(self, texts, batch_size=32):
        FakeClassifier.seen.extend(texts)
        return np.array([0.9 if "apples" in t.lower() else 0.1 for t in texts])


def test_answers_and_scores_with_fake_engine_classifier_and_judge(tiny_llama, ifs_files, tmp_path, monkeypatch):
    """The old ``run_ifs`` checks on the rule path: generation through the engine builder, stripped
    texts classified, raw responses stored, empty generations are not answers."""
    from teachfit.generation.engines import BackendConfig
    from teachfit.models import load_tokenizer
    from teachfit.studies.ifs import tone

    engine = FakeEngine(load_tokenizer(tiny_llama))
    built = []
    monkeypatch.setattr(BackendConfig, "build", lambda self, d, threads=None, seed=0: built.append(
        (self.backend, self.batch_size, seed)) or engine)
    prompts, questions = ifs_files
    ans = answer_ifs_model(prompts, questions, tiny_llama, tmp_path / "ans.parquet",
                           defaults("ifs.prompts", formats=["none", "suffix"], max_new_tokens=5),
                           defaults("ifs.objecqa", max_new_tokens=7), tiny_backend(), seed=3)
    assert built == [("transformers", 4, 3)]
    assert [m for _, m in engine.calls] == [5, 7]
    assert ans.filter(pl.col("fmt") == "suffix")["response"].to_list() == [" Sure: apples.\n"] * 4  # raw
    assert ans.filter(pl.col("fmt") == "none")["response"].to_list() == [""] * 4

    FakeClassifier.seen = []
    monkeypatch.setattr(tone, "ToneClassifier", FakeClassifier)

    def judge_factory(judge_dir, backend, batch_size, threads=None):
        assert (judge_dir, batch_size) == ("JUDGE", 4)
        return lambda prompts, words: np.array([[0.6, 0.2]] * len(prompts))

    monkeypatch.setattr("teachfit.studies.ifs.answers.label_scorer", judge_factory)
    (tmp_path / "cal.json").write_text(json.dumps({"method": "none", "shift": 0.0}))
    sc = score_ifs(tmp_path / "ans.parquet", "CLF", "JUDGE", tmp_path / "cal.json", tmp_path / "scores.parquet", 4,
                   tiny_backend())
    ifs = sc.filter(pl.col("task") == "ifs")
    assert ifs.filter(pl.col("fmt") == "suffix")["label"].to_list() == [1] * 4
    assert ifs.filter(pl.col("fmt") == "none")["label"].to_list() == [0] * 4  # empty: label 0, not scored
    assert FakeClassifier.seen == ["Sure: apples."] * 4
    obj = sc.filter(pl.col("task") == "objecqa")
    assert obj["response"].to_list() == ["\n  Apples.  "] * 3  # raw text stored
    assert obj["judge_label"].to_list() == obj["judge_label_raw"].to_list() == ["objective"] * 3
    assert obj["p_objective"].to_list() == pytest.approx([0.75] * 3)


def test_score_ifs_with_real_classifier_and_tiny_judge(trained, tiny_llama, tmp_path):
    clf = trained[0]
    answers = pl.DataFrame({
        "id": ["a__full", "b__partial", "q0"], "variant": ["full", "partial", None], "fmt": ["none", "none", "chat"],
        "prompt": ["x", "y", "z"], "response": ["the sum is 4", "   ", "It depends."],
        "task": ["ifs", "ifs", "objecqa"], "question": [None, None, "Tea or coffee?"],
        "model": ["m"] * 3, "checkpoint": ["base"] * 3, "step": [0] * 3, "examples_seen": [0] * 3})
    write_parquet(answers, tmp_path / "ans.parquet")
    (tmp_path / "cal.json").write_text(json.dumps({"method": "contextual", "shift": 0.4}))
    sc = score_ifs(tmp_path / "ans.parquet", clf, tiny_llama, [str(tmp_path / "cal.json")], tmp_path / "scores.parquet",
                   2, tiny_backend(), threads=1)
    assert sc.height == 3 and sc["label"].to_list()[1] == 0 and sc["p_answer"][1] == 0.0
    obj = sc.filter(pl.col("task") == "objecqa").row(0, named=True)
    assert 0.0 < obj["p_objective_raw"] < 1.0 and obj["judge_label"] in ("objective", "subjective")
    raw = obj["p_objective_raw"]
    assert obj["p_objective"] == pytest.approx(1 / (1 + math.exp(-(math.log(raw / (1 - raw)) - 0.4))))


def test_bad_ifs_settings_fail_when_the_config_is_validated():
    from teachfit.schema import ConfigError, load_yaml
    from teachfit.workflow.config import validate_config

    cfg = load_yaml("config/config.yaml")
    cfg["ifs"]["prompts"].update(min_frac=0.6, max_frac=0.5)
    cfg["ifs"]["tone_data"] = {"min_instruction_words": 2, "min_fragment_words": 2}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert "config.ifs.prompts: ifs_prompts: need 0 < min_frac <= max_frac" in str(err.value)
    assert "config.ifs.tone_data: tone_data.min_instruction_words must be" in str(err.value)


def test_issue16_a_dip_after_the_first_checkpoint_no_longer_stops_the_run():
    """Issue 16: with 8 prompts a curve that dips right after step 2 and then rises stopped the old
    rule (max(IFS[i+1..i+2]) - IFS[i] < 0.02) at step 2 of 12. The plateau rule compares with the
    best later value within the Wilson half-width and stops where the curve has levelled."""
    from teachfit.studies.ifs.intervals import half_width, wilson_interval

    n = 8
    vals = [4 / 8, 3 / 8, 2 / 8, 6 / 8, 7 / 8, 7 / 8]  # steps 2, 4, ..., 12
    hws = [half_width(*wilson_interval(v * n, n)) for v in vals]
    assert _old_rule(vals) == 0  # the old rule: step 2
    c = select_plateau_checkpoint([2, 4, 6, 8, 10, 12], vals, hws, epsilon=0.02, min_later=1)
    assert (c.step, c.plateau_found, c.best_later) == (8, True, 7 / 8)
