"""Tests for teachfit.studies.ifs.objecqa: data set, judge prompt, judging with a fake judge, score."""

from __future__ import annotations

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
    from teachfit.config import defaults
    from teachfit.generation.base import Completion
    from teachfit.generation.engines import BackendConfig, backend_settings
    from teachfit.io import package_data, write_parquet
    from teachfit.models import load_tokenizer
    from teachfit.prompts import format_prompt
    from teachfit.studies.ifs.answers import answer_ifs_model, score_ifs

    tok = load_tokenizer(tiny_llama)
    seen = []

    class Engine:
        tokenizer = tok

        def generate(self, prompts, sampling, desc=""):
            seen.extend(prompts)
            return [[Completion("I love it." if i % 2 else "That depends on the person.", [], "stop")]
                    for i in range(len(prompts))]

    monkeypatch.setattr(BackendConfig, "build", lambda self, d, threads=None, seed=0: Engine())
    judge = FakeJudge()
    monkeypatch.setattr("teachfit.scoring.judge.label_scorer", lambda *a, **k: judge)
    write_parquet(pl.DataFrame({"id": ["a__full"], "variant": ["full"], "text": ["Say hi"]}), tmp_path / "p.parquet")
    backend = backend_settings(defaults("models.*", source="random"), defaults("generation"))
    qs = objecqa.load_objecqa().head(4)
    answer_ifs_model(tmp_path / "p.parquet", package_data("objecqa.jsonl"), tiny_llama, tmp_path / "a.parquet",
                     defaults("ifs.prompts", formats=["none"]), defaults("ifs.objecqa", limit=4), backend, seed=0)
    assert seen[1] == format_prompt(tok, qs["question"][0], fmt="chat")  # seen[0]: the one IFS prompt
    answers = pl.read_parquet(tmp_path / "a.parquet")
    write_parquet(answers.filter(pl.col("task") == "objecqa"), tmp_path / "a.parquet")  # no tone classifier
    out = score_ifs(tmp_path / "a.parquet", "unused", "judge", tmp_path / "s.parquet", 4, backend)
    obj = out.filter(pl.col("task") == "objecqa")
    assert obj["judge_label"].to_list() == ["objective", "subjective"] * 2
    assert obj["question"].to_list() == qs["question"].to_list() and obj["id"].to_list() == qs["id"].to_list()
    assert set(obj.columns) >= {"id", "question", "response", "p_objective", "judge_label"}
    assert judge.calls[0][1] == ["objective", "subjective"]
