"""Tests for teachfit.studies.ifs: tone data, classifier (tiny random bert, transformers Trainer),
IFS prompts and formulas, plateau early stopping, and every rule function of the study on files
(answers from a tiny random llama or a fake engine, scores with a fake classifier and judge)."""

from __future__ import annotations

import json
import math
import shutil
from typing import ClassVar

import numpy as np
import polars as pl
import pytest

from teachfit.config import defaults
from teachfit.generation.base import Completion
from teachfit.generation.engines import backend_settings
from teachfit.io import DataError, package_data, write_parquet
from teachfit.studies.ifs.answers import answer_ifs_model, answer_ifs_run, score_ifs
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
    assert 55 <= ins.height <= 70 and ins["id"].n_unique() == ins.height
    p = prompt_set(ins, seed=0)
    assert p.height == ins.height
    assert p.filter(pl.col("variant") == "partial").height == math.floor(ins.height / 2 + 0.5)
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


def test_plateau_monotone_rising_has_none():
    c = select_plateau_checkpoint(S(6), [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], epsilon=0.05, k=2)
    assert (c.index, c.step, c.plateau_found) == (5, 600, False)


def test_plateau_early():
    c = select_plateau_checkpoint(S(6), [0.2, 0.8, 0.81, 0.8, 0.82, 0.81], epsilon=0.05, k=2)
    assert (c.index, c.step, c.ifs, c.plateau_found) == (1, 200, 0.8, True)


def test_plateau_noisy():
    curve = [0.1, 0.5, 0.8, 0.82, 0.79, 0.83, 0.81]
    assert select_plateau_checkpoint(S(7), curve, epsilon=0.05, k=3).index == 2
    # with a tighter epsilon the later 0.83 is a rise of 0.03 over 0.80, so index 2 fails;
    # index 3 (0.82) sees at most 0.83 = +0.01 in its window
    c = select_plateau_checkpoint(S(7), curve, epsilon=0.02, k=3)
    assert (c.index, c.plateau_found) == (3, True)
    # a window of 4 from index 3 does not fit (only 3 checkpoints follow) -> none found
    c = select_plateau_checkpoint(S(7), curve, epsilon=0.02, k=4)
    assert (c.index, c.plateau_found) == (6, False)
    # rises by exactly epsilon do not count as flat (strict <)
    c = select_plateau_checkpoint(S(3), [0.5, 0.75, 0.75], epsilon=0.25, k=1)
    assert c.index == 1


def test_plateau_flat_single_and_window():
    assert select_plateau_checkpoint(S(4), [0.7] * 4, 0.01, 2).index == 0
    one = select_plateau_checkpoint([50], [0.4], 0.01, 1)
    assert (one.index, one.step, one.plateau_found) == (0, 50, False)
    # k larger than the remaining checkpoints: the full window is required
    c = select_plateau_checkpoint(S(3), [0.7, 0.7, 0.7], 0.01, 5)
    assert (c.index, c.plateau_found) == (2, False)


def test_plateau_nans_and_errors():
    # the NaN checkpoint is skipped: windows run over valid values only
    c = select_plateau_checkpoint(S(5), [0.1, float("nan"), 0.6, 0.61, 0.6], 0.05, 2)
    assert (c.index, c.plateau_found) == (2, True)
    c = select_plateau_checkpoint(S(3), [0.2, 0.5, float("nan")], 0.05, 1)
    assert (c.index, c.plateau_found) == (1, False)
    with pytest.raises(ValueError, match="NaN"):
        select_plateau_checkpoint(S(2), [float("nan")] * 2, 0.05, 1)
    with pytest.raises(ValueError, match="increasing"):
        select_plateau_checkpoint([2, 1], [0.1, 0.2], 0.05, 1)
    with pytest.raises(ValueError, match="epsilon"):
        select_plateau_checkpoint([1, 2], [0.1, 0.2], 0.0, 1)


def _run_scores(curve: list[float], objecqa: list[float], n: int = 100) -> pl.DataFrame:
    """A score_ifs table of one run: checkpoint i (step 10(i+1)) has IFS = curve[i] over n
    prompts (alternately full / partial) and ObjecQA = objecqa[i] over 10 questions."""
    frames = []
    for i, (v, o) in enumerate(zip(curve, objecqa)):
        ones = round(v * n)
        frames.append(pl.DataFrame({
            "task": ["ifs"] * n + ["objecqa"] * 10,
            "variant": [("full", "partial")[j % 2] for j in range(n)] + [None] * 10,
            "label": [1] * ones + [0] * (n - ones) + [None] * 10,
            "judge_label": [None] * n + ["objective"] * round(o * 10) + ["subjective"] * (10 - round(o * 10)),
        }).with_columns(pl.lit(f"checkpoint-{10 * (i + 1)}").alias("checkpoint"),
                        pl.lit(10 * (i + 1)).alias("step"), pl.lit(80 * (i + 1)).alias("examples_seen")))
    return pl.concat(list(reversed(frames)))  # any row order


def test_select_checkpoint_curve_and_plateau_per_run(tmp_path):
    es = defaults("ifs.early_stopping", epsilon=0.05, k=2)
    train_log = pl.DataFrame({"step": [5, 10, 15, 20, 25, 30, 40], "loss": [2.0, 1.9, None, 1.7, 1.6, 1.5, 1.4]})
    write_parquet(train_log, tmp_path / "log.parquet")
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
    assert sel == {"step": 20, "checkpoint": "checkpoint-20", "plateau_found": True, "epsilon": 0.05, "k": 2,
                   "dataset": "d", "generator": "g", "selection": "full", "base": "r1"}
    assert c.columns == ["checkpoint", "step", "examples_seen", "ifs", "ifs_partial", "ifs_full", "n",
                         "n_partial", "n_full", "objecqa", "train_loss", "selected",
                         "dataset", "generator", "selection", "base"]
    assert c["step"].to_list() == [10, 20, 30, 40] and c["selected"].to_list() == [False, True, False, False]
    assert c["ifs"].to_list() == pytest.approx([0.2, 0.9, 0.91, 0.9])
    assert c["objecqa"].to_list() == pytest.approx([0.9, 0.8, 0.7, 0.6])
    # the last logged (non-null) loss at or before each step
    assert c["train_loss"].to_list() == pytest.approx([1.9, 1.7, 1.5, 1.4])


def test_ifs_curve_errors_and_settings():
    scores = _run_scores([0.5, 0.6], [0.5, 0.5])
    es = defaults("ifs.early_stopping")
    dup = scores.with_columns(pl.lit(10).alias("step"))
    with pytest.raises(DataError, match="share a step"):
        ifs_curve(dup, pl.DataFrame({"step": [1], "loss": [1.0]}), es)
    curve, choice = ifs_curve(scores, pl.DataFrame({"step": [1]}), es)  # no loss column: NaN losses
    assert all(math.isnan(x) for x in curve["train_loss"]) and choice.index == 1
    with pytest.raises(ValueError, match="allowed keys"):
        PlateauSettings.from_dict({"eps": 0.1})
    with pytest.raises(ValueError, match="epsilon"):
        PlateauSettings.from_dict({"epsilon": 0.0, "k": 2})
    with pytest.raises(TypeError, match="k"):  # no field re-declares a config default
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
    assert prompts["id"].n_unique() == prompts.height == 62
    assert prompts.equals(prompt_set(load_ifs_instructions(), seed=0))
    assert make_ifs_prompts(source, tmp_path / "p10.parquet", defaults("ifs.prompts", limit=10), seed=0).height == 10
    req = build_ifs_requests(prompts, ["none", "suffix"])
    assert req.select("id", "fmt").n_unique() == req.height == 2 * 62
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
    assert saved.columns == ["accuracy", "precision", "recall", "f1", "n", "n_train", "encoder",
                             "paper_accuracy", "paper_precision", "paper_recall"]
    saved = saved.row(0, named=True)
    n_held = data.filter(pl.col("split") == "heldout").height
    assert saved["n"] == n_held == row["n"] > 0
    assert saved["n_train"] == data.height - n_held
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

    monkeypatch.setattr("teachfit.scoring.judge.label_scorer", judge_factory)
    sc = score_ifs(tmp_path / "ans.parquet", "CLF", "JUDGE", tmp_path / "scores.parquet", 4, tiny_backend())
    ifs = sc.filter(pl.col("task") == "ifs")
    assert ifs.filter(pl.col("fmt") == "suffix")["label"].to_list() == [1] * 4
    assert ifs.filter(pl.col("fmt") == "none")["label"].to_list() == [0] * 4  # empty: label 0, not scored
    assert FakeClassifier.seen == ["Sure: apples."] * 4
    obj = sc.filter(pl.col("task") == "objecqa")
    assert obj["response"].to_list() == ["\n  Apples.  "] * 3  # raw text stored
    assert obj["judge_label"].to_list() == ["objective"] * 3
    assert obj["p_objective"].to_list() == pytest.approx([0.75] * 3)


def test_score_ifs_with_real_classifier_and_tiny_judge(trained, tiny_llama, tmp_path):
    clf = trained[0]
    answers = pl.DataFrame({
        "id": ["a__full", "b__partial", "q0"], "variant": ["full", "partial", None], "fmt": ["none", "none", "chat"],
        "prompt": ["x", "y", "z"], "response": ["the sum is 4", "   ", "It depends."],
        "task": ["ifs", "ifs", "objecqa"], "question": [None, None, "Tea or coffee?"],
        "model": ["m"] * 3, "checkpoint": ["base"] * 3, "step": [0] * 3, "examples_seen": [0] * 3})
    write_parquet(answers, tmp_path / "ans.parquet")
    sc = score_ifs(tmp_path / "ans.parquet", clf, tiny_llama, tmp_path / "scores.parquet", 2, tiny_backend(), threads=1)
    assert sc.height == 3 and sc["label"].to_list()[1] == 0 and sc["p_answer"][1] == 0.0
    p = sc.filter(pl.col("task") == "objecqa")["p_objective"].item()
    assert 0.0 < p < 1.0 and sc["judge_label"][2] in ("objective", "subjective")


def test_bad_ifs_settings_fail_when_the_config_is_validated():
    from teachfit.config import ConfigError, load_yaml, validate_config

    cfg = load_yaml("config/config.yaml")
    cfg["ifs"]["prompts"].update(min_frac=0.6, max_frac=0.5)
    cfg["ifs"]["tone_data"] = {"min_instruction_words": 2, "min_fragment_words": 2}
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert "config.ifs.prompts: ifs_prompts: need 0 < min_frac <= max_frac" in str(err.value)
    assert "config.ifs.tone_data: tone_data.min_instruction_words must be" in str(err.value)
