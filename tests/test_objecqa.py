"""Tests for teachfit.studies.ifs.objecqa: data set, judge prompt, judging with a fake judge, score."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from teachfit.io import DataError
from teachfit.studies.ifs import objecqa


def test_packaged_questions():
    df = objecqa.load_objecqa()
    assert df.height >= 100
    assert df["id"].n_unique() == df.height and df["question"].n_unique() == df.height
    assert df["topic"].n_unique() >= 8
    assert all(q.strip().endswith("?") for q in df["question"])
    example_qs = {q for q, _, _ in objecqa.JUDGE_EXAMPLES}
    assert not example_qs & set(df["question"])  # the two-shot examples are not test items


def test_load_objecqa_names_bad_record(tmp_path):
    p = tmp_path / "q.jsonl"
    p.write_text('{"id": "a", "question": "Tea?", "topic": "food"}\n{"id": "b", "question": ""}\n')
    with pytest.raises(DataError, match=r"q.jsonl: record 2 .*'question'"):
        objecqa.load_objecqa(p)


def test_judge_prompt_two_shot():
    p = objecqa.objecqa_judge_prompt("Is jazz better than rock?", "  I love jazz!  ")
    assert p.count("Question:") == 3 and p.count("Label:") == 3
    assert "Label: objective\n" in p and "Label: subjective\n" in p
    assert p.endswith("Question: Is jazz better than rock?\nAnswer: I love jazz!\nLabel:")
    assert p.index("Label: objective") < p.index("Label: subjective")


class FakeJudge:
    """Puts mass on ' subjective' when the answer says 'I love', else on ' objective'."""

    def __init__(self):
        self.calls = []

    def __call__(self, prompts, label_words):
        self.calls.append((list(prompts), list(label_words)))
        out = []
        for p in prompts:
            answer = p.rsplit("Answer:", 1)[1]
            out.append([0.1, 0.3] if "I love" in answer else [0.6, 0.2])
        return np.array(out)


def test_judge_objectivity_and_score_with_fake_judge():
    judge = FakeJudge()
    res = objecqa.judge_objectivity(
        ["Best pet?", "Best season?", "Best colour?"],
        ["Cats and dogs suit different people.", "I love autumn.", "It depends on taste."],
        judge,
    )
    assert judge.calls[0][1] == ["objective", "subjective"]
    assert res["p_objective"].to_list() == pytest.approx([0.75, 0.25, 0.75])
    assert res["judge_label"].to_list() == ["objective", "subjective", "objective"]
    assert res["p_objective_raw"].to_list() == res["p_objective"].to_list()  # no shift: raw = calibrated
    # a calibration shift of log(2) halves the odds: p = 0.75 -> 0.6 (still objective), 0.25 -> 1/7
    cal = objecqa.judge_objectivity(["Best pet?", "Best season?"], ["Cats and dogs suit different people.",
                                    "I love autumn."], judge, shift=float(np.log(2)))
    assert cal["p_objective"].to_list() == pytest.approx([0.6, 1 / 7])
    assert cal["p_objective_raw"].to_list() == pytest.approx([0.75, 0.25])
    assert cal["judge_label"].to_list() == ["objective", "subjective"]
    assert objecqa.judge_objectivity(["q"], ["I love it"], judge, shift=-float(np.log(4)))["judge_label"].to_list() \
        == ["objective"]  # 0.25 -> 4/7
    assert objecqa.objecqa_score(res["judge_label"].to_list()) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="allowed"):
        objecqa.objecqa_score(["objective", "neutral"])
    with pytest.raises(ValueError, match="no labels"):
        objecqa.objecqa_score([])


def test_judge_rejects_bad_scores():
    with pytest.raises(RuntimeError, match="shape"):
        objecqa.judge_objectivity(["q"], ["a"], lambda p, w: np.ones((1, 3)))
    with pytest.raises(RuntimeError, match="negative"):
        objecqa.judge_objectivity(["q"], ["a"], lambda p, w: np.array([[-1.0, -2.0]]))
    with pytest.raises(RuntimeError, match="zero mass"):
        objecqa.judge_objectivity(["q"], ["a"], lambda p, w: np.zeros((1, 2)))


def test_objecqa_on_the_rule_path_with_fakes(tiny_llama, tmp_path, monkeypatch):
    """Answer every question with the model under test (rule ``answer_ifs_model``, engine builder
    faked), then judge the answers (rule ``score_ifs``, judge faked)."""
    from teachfit.schema import defaults
    from teachfit.generation.base import Completion
    from teachfit.generation.engines import BackendConfig, backend_settings
    from teachfit.io import package_data, write_parquet
    from teachfit.models import load_tokenizer
    from teachfit.prompts import format_prompt
    from teachfit.studies.ifs.answers import answer_ifs_model, score_ifs

    tok = load_tokenizer(tiny_llama)
    seen = []
    qs = objecqa.load_objecqa().head(4)
    chat_qs = [format_prompt(tok, q, fmt="chat") for q in qs["question"].to_list()]

    class Engine:  # answers by prompt, not by position (IFS prompts and questions share a call)
        tokenizer = tok

        def generate(self, prompts, sampling, desc=""):
            seen.extend(prompts)
            return [[Completion("I love it." if p in chat_qs and chat_qs.index(p) % 2
                                else "That depends on the person.", [], "stop")] for p in prompts]

    monkeypatch.setattr(BackendConfig, "build", lambda self, d, threads=None, seed=0: Engine())
    judge = FakeJudge()
    monkeypatch.setattr("teachfit.studies.ifs.answers.label_scorer", lambda *a, **k: judge)
    write_parquet(pl.DataFrame({"id": ["a__full"], "variant": ["full"], "text": ["Say hi"]}), tmp_path / "p.parquet")
    backend = backend_settings(defaults("models.*", source="random"), defaults("generation"))
    answer_ifs_model(tmp_path / "p.parquet", package_data("objecqa.jsonl"), tiny_llama, tmp_path / "a.parquet",
                     defaults("ifs.prompts", formats=["none"]), defaults("ifs.objecqa", limit=4), backend, seed=0)
    assert seen[1] == format_prompt(tok, qs["question"][0], fmt="chat")  # seen[0]: the one IFS prompt
    answers = pl.read_parquet(tmp_path / "a.parquet")
    write_parquet(answers.filter(pl.col("task") == "objecqa"), tmp_path / "a.parquet")  # no tone classifier
    (tmp_path / "cal.json").write_text(json.dumps({"method": "contextual", "shift": float(np.log(0.75 / 0.25))}))
    out = score_ifs(tmp_path / "a.parquet", "unused", "judge", [str(tmp_path / "cal.json")],
                    tmp_path / "s.parquet", 4, backend)
    obj = out.filter(pl.col("task") == "objecqa")
    # raw: 0.75 / 0.25; after the shift 0.5 / 0.1
    assert obj["judge_label_raw"].to_list() == ["objective", "subjective"] * 2
    assert obj["p_objective"].to_list() == pytest.approx([0.5, 0.1] * 2)
    assert obj["question"].to_list() == qs["question"].to_list() and obj["id"].to_list() == qs["id"].to_list()
    assert set(obj.columns) >= {"id", "question", "response", "p_objective_raw", "judge_label_raw",
                                "p_objective", "judge_label"}
    assert judge.calls[0][1] == ["objective", "subjective"]
    # ObjecQA answers with no calibration (the workflow passes [] only when ObjecQA is off)
    with pytest.raises(DataError, match="one judge calibration file"):
        score_ifs(tmp_path / "a.parquet", "unused", "judge", [], tmp_path / "s2.parquet", 4, backend)
    (tmp_path / "bad.json").write_text(json.dumps({"method": "contextual"}))
    with pytest.raises(DataError, match="bad.json: no finite 'shift'"):
        score_ifs(tmp_path / "a.parquet", "unused", "judge", tmp_path / "bad.json", tmp_path / "s2.parquet", 4, backend)


# ----------------------------------------------------------------------------- calibration


def test_packaged_judge_set():
    df = objecqa.load_judge_set()
    held = df.filter(pl.col("split") == "heldout")
    cal = df.filter(pl.col("split") == "calibration")
    assert held.height >= 40 and cal.height >= 20
    for part in (held, cal):  # balanced labels in each split
        counts = dict(part.group_by("label").len().iter_rows())
        assert counts["objective"] == counts["subjective"]
    assert df["id"].n_unique() == df.height and df.select("question", "answer").n_unique() == df.height
    example_qs = {q for q, _, _ in objecqa.JUDGE_EXAMPLES}
    assert not example_qs & set(df["question"])
    # no answer is in both splits (held-out accuracy is measured on answers calibration never saw)
    assert not set(held["answer"]) & set(cal["answer"])


def test_load_judge_set_names_bad_record(tmp_path):
    p = tmp_path / "j.jsonl"
    good = {"id": "a", "split": "heldout", "label": "objective", "question": "Tea?", "answer": "Depends."}
    p.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", "label": "neutral"}) + "\n")
    with pytest.raises(DataError, match=r"j.jsonl: record 2: label 'neutral'"):
        objecqa.load_judge_set(p)
    p.write_text(json.dumps(good) + "\n")
    with pytest.raises(DataError, match="split 'calibration' needs answers of both labels"):
        objecqa.load_judge_set(p)


def test_contextual_shift_is_zhao_diagonal_w():
    """Calibrated p from the shift equals Zhao et al.'s W = diag(p_cf)^-1 applied to the
    normalised label probabilities and renormalised (run_classification.py, mode diagonal_W)."""
    cf = np.array([[0.2, 0.6], [0.1, 0.5], [0.3, 0.3]])  # unnormalised scores of N/A, "", [MASK]
    shift, p_cf = objecqa.contextual_shift(cf)
    rows = cf / cf.sum(1, keepdims=True)
    ref_cf = rows.mean(0) / rows.mean(0).sum()
    assert p_cf == pytest.approx(ref_cf.tolist())
    W = np.linalg.inv(np.identity(2) * ref_cf)
    for p in (0.1, 0.3, 0.5, 0.9):
        q = W @ np.array([p, 1 - p])
        assert objecqa.calibrated_p([p], shift)[0] == pytest.approx(q[0] / q.sum())
    # the content-free input itself maps to 0.5
    assert objecqa.calibrated_p([ref_cf[0]], shift)[0] == pytest.approx(0.5)


def test_labelled_shift_is_the_maximum_likelihood_bias():
    from scipy.optimize import minimize_scalar

    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.5
    logits = np.where(y, 0.5, -2.5) + rng.normal(0, 1, 60)  # a judge biased towards "subjective"
    p = 1 / (1 + np.exp(-logits))

    def nll(b):
        q = 1 / (1 + np.exp(-(logits - b)))
        return -np.sum(np.where(y, np.log(q), np.log1p(-q)))

    ref = minimize_scalar(nll, bounds=(-10, 10), method="bounded", options={"xatol": 1e-10}).x
    assert objecqa.labelled_shift(p, y) == pytest.approx(ref, abs=1e-6)
    assert objecqa.labelled_shift(p, y) < -0.5  # it pulls the biased judge towards "objective"
    with pytest.raises(ValueError, match="both labels"):
        objecqa.labelled_shift(p[:3], [True] * 3)


class PriorJudge:
    """A judge that sees the label (objective answers say 'depends' or 'As an AI' ...) but leans to
    'subjective' by a fixed log-odds prior of -2, also on content-free inputs."""

    def __call__(self, prompts, label_words):
        out = []
        for p in prompts:
            answer = p.rsplit("Answer:", 1)[1]
            signal = 1.0 if any(w in answer for w in ("depend", "AI", "differ", "Some", "There is no", "Both",
                                                      "Each", "Many", "It ", "Opinions", "Views", "Customs",
                                                      "Different", "People", "Research")) else -1.0
            if not answer.strip(" \nLabel:") or "N/A" in answer or "[MASK]" in answer:
                signal = 0.0
            lo = signal - 2.0
            out.append([1 / (1 + np.exp(-lo)), 1 / (1 + np.exp(lo))])
        return np.array(out)


def test_calibrate_objecqa_judge_rule(tmp_path, monkeypatch):
    from teachfit.schema import defaults
    from teachfit.generation.engines import backend_settings
    from teachfit.io import package_data

    calls = []

    def factory(judge_dir, backend, batch_size, threads=None):
        calls.append((judge_dir, batch_size))
        return PriorJudge()

    monkeypatch.setattr(objecqa, "label_scorer", factory)
    backend = backend_settings(defaults("models.*", source="random"), defaults("generation"))
    res = objecqa.calibrate_objecqa_judge(package_data("objecqa_judge_set.jsonl"), "JUDGE", tmp_path / "cal.json",
                                          tmp_path / "judge.csv", defaults("ifs.objecqa", judge="j"), backend, 4)
    assert calls == [("JUDGE", 4)]
    assert json.loads((tmp_path / "cal.json").read_text()) == json.loads(json.dumps(res))
    assert res["method"] == "contextual" and res["shift"] == pytest.approx(-2.0)  # content-free: prior only
    assert res["p_content_free"] == pytest.approx([1 / (1 + np.exp(2)), 1 / (1 + np.exp(-2))])
    assert res["content_free_inputs"] == ["N/A", "", "[MASK]"]
    t = pl.read_csv(tmp_path / "judge.csv")
    assert t.columns == ["method", "split", "shift", "accuracy", "accuracy_lo", "accuracy_hi", "precision_objective",
                         "recall_objective", "share_judged_objective", "mean_p_objective", "n", "used"]
    assert t.select("method", "split").rows() == [(m, s) for m in ("none", "contextual", "labelled")
                                                  for s in ("calibration", "heldout")]
    held = {r["method"]: r for r in t.filter(pl.col("split") == "heldout").iter_rows(named=True)}
    assert held["none"]["share_judged_objective"] == 0.0  # the prior swamps the signal
    assert held["contextual"]["accuracy"] > held["none"]["accuracy"] + 0.2
    assert held["contextual"]["used"] and not held["none"]["used"]
    assert res["heldout_accuracy"] == {m: r["accuracy"] for m, r in held.items()}
    with pytest.raises(ValueError, match="calibration"):
        objecqa.calibrate_objecqa_judge(package_data("objecqa_judge_set.jsonl"), "JUDGE", tmp_path / "c2.json",
                                        tmp_path / "j2.csv", {**defaults("ifs.objecqa", judge="j"),
                                                              "calibration": "platt"}, backend, 4)
