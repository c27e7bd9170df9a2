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


def test_run_objecqa_end_to_end_with_fakes():
    qs = objecqa.load_objecqa().head(4)
    seen = []

    def gen(prompts):
        seen.extend(prompts)
        return ["I love it." if i % 2 else "That depends on the person." for i in range(len(prompts))]

    out = objecqa.run_objecqa(qs, gen, FakeJudge(), prompt_fn=lambda q: f"Q: {q}\nA:")
    assert seen[0] == f"Q: {qs['question'][0]}\nA:"
    assert out["judge_label"].to_list() == ["objective", "subjective"] * 2
    assert set(out.columns) >= {"id", "question", "topic", "answer", "p_objective", "judge_label"}
    assert isinstance(out, pl.DataFrame)
