"""Win rates: the pairwise_ab protocol with fake judges (hand-checkable cases), the in-house LC fit
against an independent scikit-learn fit of the same formula, and rule judge_winrate on a tiny model
for every protocol."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np
import polars as pl
import pytest

from teachfit.evaluation.winrate import (
    WinrateJudgeSettings,
    headline_key,
    judge_pairs,
    length_controlled_minimal_inhouse,
    pairwise_prompt,
    summarize,
    win_rate,
)

INSTR = [f"Task {i}: explain topic {i}." for i in range(6)]
MODEL = [f"MODEL answer {i}" + "!" * i for i in range(6)]
REF = [f"reference answer {i}" for i in range(6)]


def _model_is_a(prompt: str) -> bool:
    a = prompt.split("### Response A\n")[1].split("### Response B")[0]
    return a.startswith("MODEL")


def always_a(prompts: list[str], words: Sequence[str]) -> np.ndarray:
    assert list(words) == ["A", "B"]
    return np.tile([0.9, 0.1], (len(prompts), 1))


def prefers_model(prompts: list[str], words: Sequence[str]) -> np.ndarray:
    return np.array([[0.8, 0.2] if _model_is_a(p) else [0.2, 0.8] for p in prompts])


def test_prompt_ends_with_answer_and_holds_both_outputs() -> None:
    p = pairwise_prompt("  Do X. ", "out one", "out two")
    assert p.endswith("Answer:")
    assert "### Instruction\nDo X.\n" in p
    assert p.index("### Response A\nout one") < p.index("### Response B\nout two")
    assert "A or B" in p
    with pytest.raises(TypeError, match="output_b"):
        pairwise_prompt("x", "y", None)  # type: ignore[arg-type]


def test_always_a_judge_is_neutralised_by_swapping() -> None:
    df = judge_pairs(INSTR, MODEL, REF, always_a, seed=0)
    assert df.columns == ["id", "p_win", "win", "len_model", "len_ref", "p_win_model_first", "p_win_model_second"]
    assert df["p_win_model_first"].to_list() == pytest.approx([0.9] * 6)
    assert df["p_win_model_second"].to_list() == pytest.approx([0.1] * 6)
    assert df["p_win"].to_list() == pytest.approx([0.5] * 6)
    assert df["win"].to_list() == [0.5] * 6  # exact ties
    wr = win_rate(df)
    assert wr["win_rate"] == 0.5 and wr["n"] == 6 and wr["stderr"] == 0.0
    assert wr["p_first"] == pytest.approx(0.9)  # the position bias is visible


def test_model_always_better() -> None:
    df = judge_pairs(INSTR, MODEL, REF, prefers_model)
    assert df["p_win"].to_list() == pytest.approx([0.8] * 6)
    wr = win_rate(df)
    assert wr["win_rate"] == 1.0 and wr["stderr"] == 0.0
    assert wr["soft_win_rate"] == pytest.approx(0.8)
    assert wr["p_first"] == pytest.approx(0.5)


def test_position_biased_judge_averages_orders() -> None:
    # model as A: P(A)=0.9; model as B: P(B)=0.3 -> p_win = 0.6
    def judge(prompts: list[str], words: Sequence[str]) -> np.ndarray:
        return np.array([[0.9, 0.1] if _model_is_a(p) else [0.7, 0.3] for p in prompts])

    df = judge_pairs(INSTR, MODEL, REF, judge)
    assert df["p_win"].to_list() == pytest.approx([0.6] * 6)
    assert df["win"].to_list() == [1.0] * 6


def test_mixed_results_and_stderr() -> None:
    # model wins on even items, loses on odd ones; scores unnormalised (renormalised)
    def judge(prompts: list[str], words: Sequence[str]) -> np.ndarray:
        rows = []
        for p in prompts:
            k = int(p.split("### Instruction\nTask ")[1].split(":")[0])
            model_good = k % 2 == 0
            rows.append([3.0, 1.0] if model_good == _model_is_a(p) else [1.0, 3.0])
        return np.array(rows)

    df = judge_pairs(INSTR, MODEL, REF, judge)
    assert df["win"].to_list() == [1.0, 0.0] * 3
    assert df["p_win"].to_list() == pytest.approx([0.75, 0.25] * 3)
    wr = win_rate(df)
    assert wr["win_rate"] == 0.5
    assert wr["stderr"] == pytest.approx(np.std([1, 0] * 3, ddof=1) / math.sqrt(6))


def test_lengths_ids_and_seed_shuffle() -> None:
    seen: list[list[str]] = []

    def judge(prompts: list[str], words: Sequence[str]) -> np.ndarray:
        seen.append(list(prompts))
        return prefers_model(prompts, words)

    a = judge_pairs(INSTR, MODEL, REF, judge, seed=0)
    b = judge_pairs(INSTR, MODEL, REF, judge, seed=1)
    assert a.equals(b)  # batch-independent judge: seed does not change results
    assert seen[0] != seen[1] and sorted(seen[0]) == sorted(seen[1])
    assert len(seen[0]) == 12
    assert a["len_model"].to_list() == [len(m) for m in MODEL]
    assert a["len_ref"].to_list() == [len(r) for r in REF]
    assert a["id"].n_unique() == 6
    c = judge_pairs(INSTR, MODEL, REF, judge, ids=[f"q{i}" for i in range(6)])
    assert c["id"].to_list() == [f"q{i}" for i in range(6)]


def test_bad_inputs() -> None:
    with pytest.raises(ValueError, match="must align"):
        judge_pairs(INSTR, MODEL[:-1], REF, always_a)
    with pytest.raises(RuntimeError, match="shape"):
        judge_pairs(INSTR, MODEL, REF, lambda p, w: np.ones((len(p), 3)))
    with pytest.raises(RuntimeError, match="NaN or negative"):
        judge_pairs(INSTR, MODEL, REF, lambda p, w: -np.ones((len(p), 2)))
    with pytest.raises(RuntimeError, match="zero mass"):
        judge_pairs(INSTR, MODEL, REF, lambda p, w: np.zeros((len(p), 2)))
    assert judge_pairs([], [], [], always_a).height == 0
    with pytest.raises(ValueError, match="empty"):
        win_rate(judge_pairs([], [], [], always_a))


def _synthetic(b0: float, b1: float, n: int, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    """Model usually longer than the reference; P(win) = sigmoid(b0 + b1 tanh(d / sd(d)))."""
    rng = np.random.default_rng(seed)
    d = np.round(rng.normal(150.0, 200.0, n)).astype(int)  # ~77% of pairs: model longer
    x = np.tanh(d / d.std(ddof=1))
    p = 1.0 / (1.0 + np.exp(-(b0 + b1 * x)))
    win = (rng.random(n) < p).astype(float)
    df = pl.DataFrame({"p_win": p, "win": win, "len_model": 500 + d, "len_ref": np.full(n, 500)})
    return df, p


def test_lc_recovers_soft_targets_exactly() -> None:
    df, p = _synthetic(0.0, 3.0, 400, seed=0)
    lc = length_controlled_minimal_inhouse(df, target="p_win", l2=0.0)
    assert lc["intercept"] == pytest.approx(0.0, abs=1e-5)
    assert lc["length_coef"] == pytest.approx(3.0, abs=1e-4)
    assert lc["lc_win_rate"] == pytest.approx(0.5, abs=1e-5)
    assert lc["win_rate"] == pytest.approx(p.mean()) and lc["win_rate"] > 0.7


def test_lc_removes_pure_length_effect_from_wins() -> None:
    df, _ = _synthetic(0.0, 3.0, 3000, seed=1)
    raw = win_rate(df)["win_rate"]
    lc = length_controlled_minimal_inhouse(df)
    assert raw > 0.7  # the length-biased judge inflates the raw rate
    assert abs(lc["lc_win_rate"] - 0.5) < 3 * lc["stderr"] + 0.01
    assert 0.005 < lc["stderr"] < 0.05
    assert lc["length_coef"] == pytest.approx(3.0, abs=0.5)


def test_lc_keeps_quality_effect() -> None:
    df, _ = _synthetic(1.0, 2.0, 3000, seed=2)
    lc = length_controlled_minimal_inhouse(df)
    assert lc["lc_win_rate"] == pytest.approx(1.0 / (1.0 + math.exp(-1.0)), abs=0.04)


def test_lc_without_length_difference_equals_raw() -> None:
    df = pl.DataFrame({"win": [1.0, 0.0, 1.0, 0.5], "p_win": [0.9, 0.2, 0.7, 0.5],
                       "len_model": [10] * 4, "len_ref": [10] * 4})
    lc = length_controlled_minimal_inhouse(df)
    assert lc["lc_win_rate"] == pytest.approx(0.625, abs=1e-6)
    assert lc["length_coef"] == 0.0


def test_lc_degenerate_all_wins() -> None:
    df = pl.DataFrame({"win": [1.0] * 3, "p_win": [0.9] * 3, "len_model": [5, 9, 30], "len_ref": [10] * 3})
    lc = length_controlled_minimal_inhouse(df)
    assert lc["lc_win_rate"] == 1.0 and lc["stderr"] == 0.0


def test_lc_errors() -> None:
    df, _ = _synthetic(0.0, 1.0, 10, seed=3)
    with pytest.raises(ValueError, match="target"):
        length_controlled_minimal_inhouse(df, target="wins")
    with pytest.raises(ValueError, match="no column 'len_ref'"):
        length_controlled_minimal_inhouse(df.drop("len_ref"))


def test_summarize_end_to_end() -> None:
    df = judge_pairs(INSTR, MODEL, REF, prefers_model)
    s = summarize(df)
    assert s["win_rate"] == 1.0 and s["lc_win_rate_minimal_inhouse"] == 1.0 and s["n"] == 6
    assert s["lc_target_minimal_inhouse"] == "win"
    assert "lc_win_rate" not in s and not any("alpaca" in k for k in s)  # never named AlpacaEval's LC
    assert "lc_win_rate_minimal_inhouse" not in summarize(df, length_controlled=False)
    assert s["avg_len_model"] == pytest.approx(np.mean([len(m) for m in MODEL]))


# --------------------------------------------------------------------------- the rules, on a tiny model


def _backend(**overrides) -> dict:
    from teachfit.schema import defaults
    from teachfit.generation.engines import backend_settings

    return {**backend_settings(defaults("models.*", source="random"), defaults("generation", batch_size=4)),
            **overrides}


@pytest.fixture(scope="module")
def lora_sft_dir(tiny_llama, tmp_path_factory):
    """What teachfit.training.sft.train_sft leaves for a LoRA run: the final adapter (random A and B,
    so it changes the answers) with the tokenizer, listed in checkpoints.json."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from teachfit.io import write_json
    from teachfit.models import load_tokenizer

    sft = tmp_path_factory.mktemp("sft") / "run"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    cfg = LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                     task_type="CAUSAL_LM")
    get_peft_model(model, cfg).save_pretrained(str(sft / "adapter"))
    load_tokenizer(tiny_llama).save_pretrained(str(sft / "adapter"))
    write_json([{"step": 2, "examples_seen": 8, "path": "adapter"}], sft / "checkpoints.json")
    return sft


def test_answer_and_judge_winrate_rules(tiny_llama, lora_sft_dir, tmp_path) -> None:
    from teachfit.evaluation.winrate import answer_winrate, judge_winrate
    from teachfit.io import write_parquet

    write_parquet(pl.DataFrame({"id": ["a", "b", "c"], "instruction": INSTR[:3]}), tmp_path / "instr.parquet")
    answers = answer_winrate(instructions=tmp_path / "instr.parquet", model_dir=tiny_llama, sft_dir=lora_sft_dir,
                             answers=tmp_path / "answers.parquet", max_new_tokens=4, backend=_backend(), seed=0,
                             threads=1)
    assert answers.columns == ["id", "instruction", "response"] and answers["id"].to_list() == ["a", "b", "c"]
    assert pl.read_parquet(tmp_path / "answers.parquet").equals(answers)
    again = answer_winrate(instructions=tmp_path / "instr.parquet", model_dir=tiny_llama, sft_dir=lora_sft_dir,
                           answers=tmp_path / "again.parquet", max_new_tokens=4, backend=_backend(batch_size=1),
                           seed=0, threads=1)
    assert again.equals(answers)  # greedy answers do not depend on the batch size
    with pytest.raises(ValueError, match=r"LoRA adapter .* backend 'vllm'"):
        answer_winrate(instructions=tmp_path / "instr.parquet", model_dir=tiny_llama, sft_dir=lora_sft_dir,
                       answers=tmp_path / "x.parquet", max_new_tokens=4, backend=_backend(backend="vllm"), seed=0)

    # the reference misses id "c": that pair is dropped
    write_parquet(pl.DataFrame({"id": ["a", "b"], "response": REF[:2]}), tmp_path / "ref.parquet")
    summary = judge_winrate(answers=tmp_path / "answers.parquet", reference=tmp_path / "ref.parquet",
                            judge_dir=tiny_llama, judge_prompt=[], summary=tmp_path / "summary.json",
                            judged=tmp_path / "judged.parquet", seed=0, backend=_backend(),
                            benchmark=_settings(), run=RUN, threads=1)
    judged = pl.read_parquet(tmp_path / "judged.parquet")
    assert judged["id"].to_list() == ["a", "b"] and summary["n"] == 2
    assert 0.0 <= summary["win_rate"] <= 1.0 and 0.0 <= summary["lc_win_rate_minimal_inhouse"] <= 1.0
    assert summary["benchmark"] == "heldout" and summary["model_name"] == "d/g/full/b"
    assert summary["reference_name"] == "t_greedy" and summary["protocol"] == "pairwise_ab"
    assert json.loads((tmp_path / "summary.json").read_text()) == pytest.approx(summary, nan_ok=True)
    with pytest.raises(ValueError, match="judge_prompt file applies to protocols alpaca_eval2 and arena_hard"):
        judge_winrate(answers=tmp_path / "answers.parquet", reference=tmp_path / "ref.parquet", judge_dir=tiny_llama,
                      judge_prompt=[str(tmp_path / "p.yaml")], summary=tmp_path / "s2.json",
                      judged=tmp_path / "j2.parquet", seed=0, backend=_backend(), benchmark=_settings(), run=RUN)
    from teachfit.io import DataError

    with pytest.raises(DataError, match="sets no reference_name"):
        judge_winrate(answers=tmp_path / "answers.parquet", reference=tmp_path / "ref.parquet", judge_dir=tiny_llama,
                      judge_prompt=[], summary=tmp_path / "s2.json", judged=tmp_path / "j2.parquet", seed=0,
                      backend=_backend(), benchmark=_settings(reference_name=None), run=RUN)


RUN = {"dataset": "d", "generator": "g", "selection": "full", "base": "b"}


def _settings(**overrides) -> dict:
    return {"name": "heldout", "protocol": "pairwise_ab", "judge": "tiny", "reference_name": "t_greedy",
            "length_controlled": "inhouse_minimal", "judge_max_new_tokens": 16, **overrides}


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize(("bad", "message"), [
    ({"protocol": "mt_bench"}, "protocol 'mt_bench' is not known"),
    ({"length_controlled": "yes"}, "length_controlled 'yes' is not known"),
    ({"length_controlled": "alpaca_eval"}, "'alpaca_eval' needs protocol 'alpaca_eval2'"),
    ({"protocol": "arena_hard"}, "protocol 'arena_hard' has no length control"),
    ({"judge_max_new_tokens": 0}, "judge_max_new_tokens must be >= 1"),
    ({"temperature": 0.0}, r"unknown key\(s\) \['temperature'\]"),
])
def test_judge_settings_reject_bad_values(bad, message) -> None:
    with pytest.raises(ValueError, match=message):
        WinrateJudgeSettings.from_dict(_settings(**bad))
    assert WinrateJudgeSettings.from_dict(_settings(protocol="arena_hard", length_controlled="none")).protocol == \
        "arena_hard"


def test_headline_keys_name_what_counts() -> None:
    assert headline_key("alpaca_eval") == "lc_win_rate_alpaca_eval"
    assert headline_key("inhouse_minimal") == "lc_win_rate_minimal_inhouse"
    assert headline_key("none") == "win_rate"


# --------------------------------------------------------------------------- in-house LC vs an independent fit


def _sklearn_fit(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[float, float]:
    """The same model fitted by scikit-learn: each row duplicated into a y=1 row of weight p and a
    y=0 row of weight 1-p (AlpacaEval's soft-label trick, glm_winrate.fit_LogisticRegressionCV),
    intercept unpenalised, L2 on the slope with C = 1 / (n * l2) (our loss is the mean, sklearn's the
    sum), or no penalty (C = inf) for l2 = 0."""
    from sklearn.linear_model import LogisticRegression

    n = x.size
    X = np.concatenate([x, x])[:, None]
    Y = np.concatenate([np.ones(n), np.zeros(n)])
    W = np.concatenate([y, 1.0 - y])
    C = np.inf if l2 == 0 else 1.0 / (n * l2)
    clf = LogisticRegression(C=C, fit_intercept=True, solver="lbfgs", tol=1e-12, max_iter=100_000)
    clf.fit(X, Y, sample_weight=W)
    return float(clf.intercept_[0]), float(clf.coef_[0, 0])


@pytest.mark.parametrize(("target", "l2", "seed"), [("win", 1e-3, 0), ("win", 0.0, 1), ("p_win", 1e-3, 2),
                                                    ("p_win", 0.0, 3), ("win", 0.05, 4)])
def test_inhouse_lc_equals_an_independent_sklearn_fit(target, l2, seed) -> None:
    """The in-house fit (scipy L-BFGS on the mean soft-label loss) equals scikit-learn's
    LogisticRegression on AlpacaEval's duplicated rows, to 1e-6: intercept, slope and LC rate."""
    df, _ = _synthetic(0.3, 1.5, 300, seed=seed)
    if target == "win":  # add exact ties, as judge_pairs produces them
        df = df.with_columns(pl.when(pl.int_range(pl.len()) % 7 == 0).then(0.5).otherwise(pl.col("win")).alias("win"))
    lc = length_controlled_minimal_inhouse(df, target=target, l2=l2)
    d = (df["len_model"] - df["len_ref"]).to_numpy().astype(float)
    x = np.tanh(d / d.std(ddof=1))
    b0, b1 = _sklearn_fit(x, df[target].to_numpy(), l2)
    assert lc["intercept"] == pytest.approx(b0, abs=1e-6)
    assert lc["length_coef"] == pytest.approx(b1, abs=1e-6)
    assert lc["lc_win_rate"] == pytest.approx(1.0 / (1.0 + np.exp(-b0)), abs=1e-6)


def test_inhouse_lc_is_not_the_raw_rate_when_length_drives_wins() -> None:
    """A control for the test above: the two fits agree because both fit the same model, not
    because the LC rate collapses to something trivial."""
    df, _ = _synthetic(0.0, 3.0, 2000, seed=5)
    lc = length_controlled_minimal_inhouse(df, target="p_win", l2=0.0)
    assert lc["win_rate"] - lc["lc_win_rate"] > 0.2
    assert abs(lc["lc_win_rate"] - 0.5) < 0.01
