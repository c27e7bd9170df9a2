"""Tests for teachfit.studies.ifs: tone data rule, classifier (tiny random bert), IFS prompts and
formulas, plateau early stopping."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from teachfit.io import DataError
from teachfit.studies.ifs.answers import generate_fn_from_backend, run_ifs
from teachfit.studies.ifs.prompts import (
    IfsPromptSettings,
    build_ifs_requests,
    format_ifs_prompt,
    load_ifs_instructions,
    make_ifs_prompts,
)
from teachfit.studies.ifs.scores import (
    PlateauSettings,
    checkpoint_ifs_table,
    ifs_scores,
    ifs_table,
    select_plateau_checkpoint,
)
from teachfit.studies.ifs.tone import (
    TONE_MANIFEST,
    ToneClassifierSettings,
    ToneDataSettings,
    binary_metrics,
    classify_responses,
    evaluate_tone_classifier,
    make_tone_dataset,
    make_tone_dataset_from_settings,
    split_tone_dataset,
    train_tone_classifier,
)

INS = "Write a short poem about the sea and the moon"  # 10 words
RESP = "Silver light\non rolling waves,\nthe moon keeps watch."


def one_pair(**kw) -> pl.DataFrame:
    return pl.DataFrame({"pair_id": ["p1"], "instruction": [INS], "response": [RESP]}, **kw)


# ----------------------------------------------------------------------------- tone data


def test_tone_rule_pinned_on_hand_made_pair_ic():
    df = make_tone_dataset(one_pair(), seed=0, shift_choices=[0.5], ic_share=1.0)
    assert df.height == 2
    r = df.filter(pl.col("kind") == "R").row(0, named=True)
    assert (r["label"], r["cut"], r["text"], r["pair_id"]) == (1, 10, RESP, "p1")
    c = df.filter(pl.col("label") == 0).row(0, named=True)
    # f = 0.5 of 10 words -> k = 5 words kept, cut = 10 - 5 = 5
    assert (c["kind"], c["cut"], c["text"]) == ("Ic", 5, "the sea and the moon")
    assert set(df.columns) >= {"id", "pair_id", "cut", "kind", "label", "text", "split"}


def test_tone_rule_pinned_ic_plus_r_and_clipping():
    df = make_tone_dataset(one_pair(), seed=3, shift_choices=[0.25], ic_share=0.0)
    c = df.filter(pl.col("label") == 0).row(0, named=True)
    # floor(0.25 * 10 + 0.5) = 3 words kept -> cut 7; joiner "\n" then the response
    assert (c["kind"], c["cut"]) == ("Ic+R", 7)
    assert c["text"] == "and the moon\n" + RESP
    # tiny fraction: clipped up to min_fragment_words
    lo = make_tone_dataset(one_pair(), shift_choices=[0.01], ic_share=1.0,
                               min_fragment_words=3).filter(pl.col("label") == 0)
    assert lo["cut"].item() == 7 and lo["text"].item() == "and the moon"
    # f = 1.0: at most n - 1 words, so the text still starts inside the instruction
    hi = make_tone_dataset(one_pair(), shift_choices=[1.0], ic_share=1.0)
    hi = hi.filter(pl.col("label") == 0)
    assert hi["cut"].item() == 1 and hi["text"].item() == INS.split(" ", 1)[1]


def test_tone_rule_keeps_whitespace_and_drops_short_pairs():
    pairs = pl.DataFrame({
        "id": ["a", "b", "c"],
        "instruction": ["List  three\nfruits please now", "Too short", "Name a colour for me"],
        "response": ["Apple, pear, plum.", "Fine answer here.", "Red"],
    })
    df = make_tone_dataset(pairs, shift_choices=[0.5], ic_share=1.0)
    # b: 2 instruction words < 4; c: 1 response word < 2 -> dropped; ids taken from "id"
    assert df["pair_id"].unique().to_list() == ["a"]
    assert df.filter(pl.col("label") == 0)["text"].item() == "fruits please now"


def test_tone_dataset_seeded_balanced_and_order_free():
    rng = np.random.default_rng(1)
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    pairs = pl.DataFrame({
        "pair_id": [f"q{i}" for i in range(300)],
        "instruction": [" ".join(rng.choice(words, size=int(rng.integers(4, 12))))
                        for _ in range(300)],
        "response": [" ".join(rng.choice(words, size=6)) for _ in range(300)],
    })
    a = make_tone_dataset(pairs, seed=7)
    b = make_tone_dataset(pairs.reverse(), seed=7)
    c = make_tone_dataset(pairs, seed=8)
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
        ToneDataSettings(min_instruction_words=2, min_fragment_words=2)
    with pytest.raises(ValueError, match="learning_rte"):
        ToneClassifierSettings.from_dict({"learning_rte": 1e-4})
    with pytest.raises(DataError, match="duplicate pair id"):
        make_tone_dataset(pl.concat([one_pair(), one_pair()]))
    s = ToneDataSettings.from_dict({"shift_choices": [0.5], "ic_share": 1.0})
    out = make_tone_dataset_from_settings(one_pair(), s)
    assert out.filter(pl.col("label") == 0)["kind"].item() == "Ic"


# ----------------------------------------------------------------------------- classifier


def test_binary_metrics_hand_made():
    m = binary_metrics([1, 1, 0, 0, 1], [1, 0, 0, 1, 1])
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3) and m["n"] == 5
    z = binary_metrics([0, 0], [0, 0])
    assert z["precision"] == 0.0 and z["accuracy"] == 1.0


@pytest.fixture(scope="module")
def tinybert(tmp_path_factory):
    from teachfit.models import materialize

    d = tmp_path_factory.mktemp("tinybert") / "tinybert"
    materialize("tinybert", {"source": "random", "arch": "bert", "task": "seq_cls"}, d)
    return d


def _separable(n: int, seed: int) -> pl.DataFrame:
    """Answers are sentences of digits/answer words; continuations of instruction words."""
    rng = np.random.default_rng(seed)
    pos = "answer the sum is 0 1 2 3 4 5 6 7 8 9 equals total".split()
    neg = "write explain list give example question how what make find".split()
    texts, labels = [], []
    for i in range(n):
        y = i % 2
        texts.append(" ".join(rng.choice(pos if y else neg, size=8)))
        labels.append(y)
    return pl.DataFrame({"text": texts, "label": labels})


def test_train_and_evaluate_tiny_classifier(tinybert, tmp_path):
    train = _separable(96, 0).with_columns(pl.lit("train").alias("split"))
    held = _separable(40, 1).with_columns(pl.lit("R").alias("kind"))
    s = {"epochs": 4, "learning_rate": 1e-3, "batch_size": 16, "max_length": 32,
         "warmup_ratio": 0.0}
    man = train_tone_classifier(tinybert, train, tmp_path / "clf", s, device="cpu")
    assert man["epoch_losses"][-1] < man["epoch_losses"][0]
    assert man["n_train"] == 96 and (tmp_path / "clf" / TONE_MANIFEST).exists()
    assert not (tmp_path / ".clf.partial").exists()
    met = evaluate_tone_classifier(tmp_path / "clf", held, device="cpu")
    for key in ("accuracy", "precision", "recall", "f1"):
        assert 0.0 <= met[key] <= 1.0
    assert met["n"] == 40 and met["accuracy"] > 0.75
    probs, labels = classify_responses(tmp_path / "clf", ["", "the sum is 4", "   "],
                                           device="cpu")
    assert probs.shape == (3,) and labels.tolist()[0] == 0 and labels.tolist()[2] == 0
    assert 0.0 <= probs[1] <= 1.0
    # determinism: same seed, same losses
    man2 = train_tone_classifier(tinybert, train, tmp_path / "clf2", s, device="cpu")
    assert man2["epoch_losses"] == pytest.approx(man["epoch_losses"])


def test_train_refuses_heldout_rows(tinybert, tmp_path):
    df = _separable(8, 0).with_columns(pl.Series("split", ["train"] * 6 + ["heldout"] * 2))
    with pytest.raises(DataError, match="heldout"):
        train_tone_classifier(tinybert, df, tmp_path / "x", {"epochs": 1})


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
    p = make_ifs_prompts(ins, seed=0)
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
    assert p.equals(make_ifs_prompts(ins.reverse(), seed=0))
    assert not p["variant"].equals(make_ifs_prompts(ins, seed=1)["variant"])
    req = build_ifs_requests(p, ["none", "alpaca"])
    assert req.height == 2 * p.height and set(req["fmt"]) == {"none", "alpaca"}


def test_partial_prompt_cut_pinned():
    df = pl.DataFrame({"id": ["a"], "instruction": ["one two three four five six seven eight nine ten"]})
    p = make_ifs_prompts(df, seed=0, partial_share=1.0, min_frac=0.5, max_frac=0.5)
    assert p.row(0, named=True) == {"id": "a__partial", "source_id": "a", "variant": "partial",
                                         "text": "one two three four five", "n_words": 10,
                                         "kept_words": 5}
    none = make_ifs_prompts(df, seed=0, partial_share=0.0)
    assert none["variant"].to_list() == ["full"]


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


def test_run_ifs_with_fake_generator_and_classifier():
    prompts = make_ifs_prompts(
        pl.DataFrame({"id": ["a", "b"], "instruction": ["Name three fruits please", "Say hi to me"]}),
        seed=0)
    req = build_ifs_requests(prompts, ["suffix"])

    class Comp:
        def __init__(self, text):
            self.text = text

    class Backend:
        def generate(self, prompts, sampling):
            assert sampling == "greedy"
            return [[Comp("Sure: apples." if p.endswith("### Response:") else "")] for p in prompts]

    gen = generate_fn_from_backend(Backend(), "greedy")
    out = run_ifs(req, gen, lambda texts: np.full(len(texts), 0.9))
    assert out["label"].to_list() == [1, 1] and out["response"].to_list() == ["Sure: apples."] * 2
    seen = []
    out1 = run_ifs(req, lambda ps: ["\n  Apples.  "] * len(ps),
                       lambda t: seen.extend(t) or np.zeros(len(t)))
    assert seen == ["Apples."] * 2 and out1["response"][0] == "\n  Apples.  "
    assert out1["label"].to_list() == [0, 0]
    out2 = run_ifs(req, lambda ps: [""] * len(ps), lambda t: np.ones(len(t)))
    assert out2["label"].to_list() == [0, 0]  # empty generations are not answers


# ----------------------------------------------------------------------------- plateau


S = lambda n: list(range(100, 100 * (n + 1), 100))  # noqa: E731


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


def test_checkpoint_ifs_table():
    rows = []
    for run, curve in {"r2": [0.1, 0.3, 0.5, 0.7], "r1": [0.2, 0.9, 0.91, 0.9]}.items():
        for i, v in enumerate(curve):
            rows.append(dict(run=run, step=(i + 1) * 10, examples_seen=(i + 1) * 80, ifs=v,
                             ifs_partial=v - 0.1, ifs_full=v + 0.05, objecqa=0.9 - 0.1 * i,
                             train_loss=2.0 - 0.1 * i))
    t = checkpoint_ifs_table(list(reversed(rows)), epsilon=0.05, k=2)
    assert t["run"].to_list() == ["r1"] * 4 + ["r2"] * 4
    sel = t.filter(pl.col("selected"))
    assert sel.select("run", "step", "plateau_found").rows() == [("r1", 20, True), ("r2", 40, False)]
    r1 = t.filter(pl.col("run") == "r1")
    assert r1["ifs_delta"][0] is None and r1["ifs_delta"][1] == pytest.approx(0.7)
    assert r1["objecqa_delta"][1] == pytest.approx(-0.1)
    with pytest.raises(DataError, match="duplicate"):
        checkpoint_ifs_table(rows + rows[:1])
    with pytest.raises(ValueError, match="metric"):
        PlateauSettings.from_dict({"metric": "loss"})
    with pytest.raises(ValueError, match="allowed keys"):
        PlateauSettings.from_dict({"eps": 0.1})


def test_stage_functions_on_files(tmp_path):
    """The workflow's IFS stages (``teachfit.studies.ifs``) on files."""
    import json

    from teachfit.studies.ifs.prompts import make_prompts
    from teachfit.studies.ifs.tone import make_tone_data

    pairs = tmp_path / "pairs.jsonl"
    with pairs.open("w") as fh:
        for i in range(20):
            fh.write(json.dumps({"id": f"s{i}", "instruction": f"Please list {i} nice things about the moon",
                                 "response": f"Here are {i} things: it is bright."}) + "\n")
    df = make_tone_data(pairs, tmp_path / "tone.parquet", seed=0, heldout_share=0.5)
    assert df.height == 40 and pl.read_parquet(tmp_path / "tone.parquet").equals(df)
    assert set(df["pair_id"]) == {f"s{i}" for i in range(20)}
    assert set(df["split"]) == {"train", "heldout"}
    # no id column: pair ids are content hashes of the two texts (unique per pair)
    no_id = tmp_path / "no_id.jsonl"
    no_id.write_text("".join(json.dumps({"instruction": f"Please list {i} nice things about the moon",
                                         "response": "Here they are, all bright."}) + "\n" for i in range(5)))
    assert make_tone_data(no_id, tmp_path / "t2.parquet", seed=0, heldout_share=0.2)["pair_id"].n_unique() == 5
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "s0", "instruction": "a b c d e", "output": "x y"}) + "\n")
    with pytest.raises(DataError, match=r"bad.jsonl: .*missing \['response'\]"):
        make_tone_data(bad, tmp_path / "x.parquet", seed=0, heldout_share=0.2)
    assert not (tmp_path / "x.parquet").exists()

    prompts = make_prompts(None, tmp_path / "prompts.parquet", {"seed": 0, "partial_share": 0.5})
    assert pl.read_parquet(tmp_path / "prompts.parquet").equals(prompts)
    assert prompts["id"].n_unique() == prompts.height == 62
    assert make_prompts(None, tmp_path / "p10.parquet", {"limit": 10}).height == 10
    req = build_ifs_requests(prompts, ["none", "suffix"])
    assert req.select("id", "fmt").n_unique() == req.height == 2 * 62
    with pytest.raises(ValueError, match="formats"):
        IfsPromptSettings.from_dict({"formats": ["chat"]})


def test_train_classifier_stage(tinybert, tmp_path):
    from teachfit.io import write_parquet
    from teachfit.studies.ifs.tone import train_classifier

    words = "alpha beta gamma delta epsilon zeta eta theta".split()
    pairs = pl.DataFrame({"pair_id": [f"p{i}" for i in range(30)],
                          "instruction": [" ".join(words[i % 4:i % 4 + 5]) for i in range(30)],
                          "response": ["the answer is " + str(i) for i in range(30)]})
    tone = make_tone_dataset(pairs, heldout_share=0.3)
    write_parquet(tone, tmp_path / "tone.parquet")
    row = train_classifier(tmp_path / "tone.parquet", tinybert, tmp_path / "clf", tmp_path / "metrics.csv",
                           {"epochs": 1, "batch_size": 8, "max_length": 16}, seed=0)
    saved = pl.read_csv(tmp_path / "metrics.csv").row(0, named=True)
    n_held = tone.filter(pl.col("split") == "heldout").height
    assert saved["n"] == n_held == row["n"] > 0
    assert saved["n_train"] == tone.height - n_held
    assert 0.0 <= saved["accuracy"] <= 1.0 and (tmp_path / "clf").is_dir()
