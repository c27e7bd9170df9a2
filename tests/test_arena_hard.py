"""Arena-Hard v0.1 protocol: verdict parsing, both games, the continuation turn, the weighted
score against a Bradley-Terry fit of the same battles, and rule judge_winrate through an
endpoint (a fake server) and a local model."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
import pytest
from test_openai_backend import ENV, FakeServer, server  # noqa: F401 - the fixture

from teachfit.schema import defaults
from teachfit.evaluation import arena_hard as ah
from teachfit.generation.engines import backend_settings
from teachfit.io import write_parquet

RUN = {"dataset": "d", "generator": "g", "selection": "full", "base": "b"}


@pytest.mark.parametrize(("text", "expected"), [
    ("... My final verdict is: [[B>A]]", ("B>A", False)),
    ("[[A>>B]] and again [[A>>B]]", ("A>>B", False)),  # one distinct label
    ("first [[A>B]] then [[B>A]]", (None, False)),  # several distinct: no verdict, no retry
    ("no label at all, [A>B] single brackets", (None, True)),  # none: ask the judge to continue
    ("[[A=B]]", ("A=B", False)),
    ("[[AB]]", ("AB", False)),  # parsed, but not one of the five: scoring drops it
])
def test_parse_verdict_is_arena_hards_get_score(text, expected) -> None:
    assert ah.parse_verdict(text) == expected


@pytest.mark.parametrize(("label", "model_is_a", "expected"), [
    ("A>>B", False, (0.0, 3)), ("A>B", False, (0.0, 1)), ("A=B", False, (0.5, 1)), ("B>A", False, (1.0, 1)),
    ("B>>A", False, (1.0, 3)), ("A>>B", True, (1.0, 3)), ("A>B", True, (1.0, 1)), ("A=B", True, (0.5, 1)),
    ("B>A", True, (0.0, 1)), ("B>>A", True, (0.0, 3)),
])
def test_model_score_per_game(label, model_is_a, expected) -> None:
    assert ah.model_score(label, model_is_a) == expected


def test_invalid_labels_have_no_weight() -> None:
    for label in (None, "AB", "A<B", "B=A"):
        score, weight = ah.model_score(label, True)
        assert math.isnan(score) and weight == 0


def _question(conv: list[dict[str, str]]) -> tuple[int, bool]:
    user = conv[1]["content"]
    k = int(user.split("<|User Prompt|>\nQ")[1].split("\n")[0])
    a = user.split("<|The Start of Assistant A's Answer|>\n")[1].split("\n<|The End")[0]
    return k, a.startswith("MODEL")


def test_both_games_and_the_continuation_turn() -> None:
    """Question 0: the judge prefers the model strongly; question 1: a tie, but the first reply of
    each game has no label; question 2: two different labels (invalid, no retry)."""
    calls: list[list] = []

    def chat(convs):
        calls.append(convs)
        out = []
        for conv in convs:
            k, model_is_a = _question(conv)
            if k == 0:
                out.append("My answer... [[A>>B]]" if model_is_a else "[[B>>A]]")
            elif k == 1:
                out.append("still thinking" if len(conv) == 2 else "Final: [[A=B]]")
            else:
                out.append("[[A>B]] or maybe [[B>A]]")
        return out

    df = ah.judge_games([f"Q{k}" for k in range(3)], [f"MODEL {k}" for k in range(3)], [f"base {k}" for k in range(3)],
                        chat, ids=["q0", "q1", "q2"])
    assert df.columns == list(ah.JUDGED_COLUMNS)
    assert df["id"].to_list() == ["q0", "q0", "q1", "q1", "q2", "q2"] and df["game"].to_list() == [1, 2] * 3
    assert df["model_is_a"].to_list() == [False, True] * 3  # game 1: baseline is A; game 2 swapped
    assert df["label"].to_list() == ["B>>A", "A>>B", "A=B", "A=B", None, None]
    assert df["weight"].to_list() == [3, 3, 1, 1, 0, 0]
    assert df["attempts"].to_list() == [1, 1, 2, 2, 1, 1]
    assert df["judgment"][2] == "\nstill thinking\nFinal: [[A=B]]"
    assert len(calls) == 2 and len(calls[0]) == 6 and len(calls[1]) == 2
    retry = calls[1][0]
    assert [t["role"] for t in retry] == ["system", "user", "assistant", "user"]
    assert retry[2]["content"] == "still thinking" and retry[3]["content"] == ah.CONTINUE_PROMPT
    assert calls[0][0][0] == {"role": "system", "content": ah.SYSTEM_PROMPT}
    for label in ("[[A>>B]]", "[[A>B]]", "[[A=B]]", "[[B>A]]", "[[B>>A]]"):
        assert label in ah.SYSTEM_PROMPT
    s = ah.arena_hard_score(df)
    assert s["win_rate"] == pytest.approx((3 + 3 + 0.5 + 0.5) / 8)  # >> counted 3 times, ties 1/2
    assert s["n_invalid_games"] == 2 and s["n_valid_games"] == 4 and s["n_retried"] == 2 and s["n_questions"] == 3
    assert s["p_a_wins"] == pytest.approx((0.0 + 1.0 + 0.5 + 0.5) / 4)


def test_a_judge_that_ignores_the_answers_scores_one_half() -> None:
    """A pure position bias (always A) cancels over the two games."""
    df = ah.judge_games(["Q0", "Q1"], ["MODEL 0", "MODEL 1"], ["b0", "b1"], lambda convs: ["[[A>B]]"] * len(convs),
                        ids=["0", "1"])
    s = ah.arena_hard_score(df)
    assert s["win_rate"] == 0.5 and s["p_a_wins"] == 1.0


def _bt_win_rate(df: pl.DataFrame) -> float:
    """Arena-Hard v0.1's compute_mle_elo + predict_win_rate (utils_math.py), independently: battles
    baseline (model_a) vs model (model_b), each game expanded `weight` times, duplicated (a tie is
    one win for each side), logistic regression without intercept or penalty on +-ln(10) columns;
    Elo = 400 * coef + 1000; win rate = 1 / (1 + 10 ** ((R_base - R_model) / 400))."""
    from sklearn.linear_model import LogisticRegression

    X, Y = [], []
    for r in df.filter(pl.col("weight") > 0).iter_rows(named=True):
        a_wins = 1.0 - r["score"]  # model_a is the baseline
        for _ in range(r["weight"]):
            for y in ((1.0, 1.0) if a_wins == 1.0 else (0.0, 0.0) if a_wins == 0.0 else (1.0, 0.0)):
                X.append([math.log(10), -math.log(10)])
                Y.append(y)
    clf = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-10, max_iter=10_000)
    clf.fit(np.array(X), np.array(Y))
    elo_base, elo_model = 400 * clf.coef_[0] + 1000
    return 1.0 / (1.0 + 10 ** ((elo_base - elo_model) / 400))


def test_score_equals_the_bradley_terry_fit_against_the_baseline() -> None:
    rng = np.random.default_rng(0)
    labels = rng.choice(list(ah.LABELS) + ["AB"], size=(40, 2), p=[0.1, 0.2, 0.2, 0.25, 0.2, 0.05])
    replies = {(k, g): f"[[{labels[k, g]}]]" for k in range(40) for g in (0, 1)}

    def chat(convs):
        return [replies[(k, int(model_is_a))] for k, model_is_a in map(_question, convs)]

    df = ah.judge_games([f"Q{k}" for k in range(40)], [f"MODEL {k}" for k in range(40)],
                        [f"b{k}" for k in range(40)], chat, ids=[str(k) for k in range(40)])
    s = ah.arena_hard_score(df, seed=1)
    assert s["win_rate"] == pytest.approx(_bt_win_rate(df), abs=1e-6)
    assert s["ci_low"] < s["win_rate"] < s["ci_high"]
    assert ah.arena_hard_score(df, seed=1) == s  # seeded bootstrap
    assert s["n_invalid_games"] == int((labels == "AB").sum())


def test_no_valid_game_gives_nan() -> None:
    df = ah.judge_games(["Q0"], ["MODEL 0"], ["b0"], lambda convs: ["no idea"] * len(convs), ids=["0"])
    s = ah.arena_hard_score(df)
    assert math.isnan(s["win_rate"]) and s["n_invalid_games"] == 2 and s["n_retried"] == 2


# --------------------------------------------------------------------------- rule judge_winrate


def _answers(tmp_path, n: int) -> None:
    write_parquet(pl.DataFrame({"id": [f"u{i}" for i in range(n)], "instruction": [f"Q{i}" for i in range(n)],
                                "response": [f"MODEL answer {i}" for i in range(n)]}), tmp_path / "answers.parquet")
    write_parquet(pl.DataFrame({"id": [f"u{i}" for i in range(n)], "response": [f"base answer {i}" for i in range(n)],
                                "generator": ["gpt-4-0314"] * n}), tmp_path / "ref.parquet")


def _settings(**kw: Any) -> dict[str, Any]:
    return {"name": "arena_hard", "protocol": "arena_hard", "judge": "judge", "reference_name": "gpt-4-0314",
            "length_controlled": "none", "judge_max_new_tokens": 64, **kw}


def test_judge_winrate_arena_hard_through_an_endpoint(server, tmp_path) -> None:  # noqa: F811
    from teachfit.evaluation.winrate import judge_winrate

    def responder(payload: dict[str, Any], k: int):
        assert payload["temperature"] == 0.0 and payload["max_tokens"] == 64 and "logprobs" not in payload
        k_q, model_is_a = _question(payload["messages"])
        if k_q == 0 and len(payload["messages"]) == 2:
            text = "Let me think about it."  # no verdict: the judge is asked to continue
        else:
            text = "My final verdict: " + ("[[A>B]]" if model_is_a else "[[B>A]]")
        return 200, {"choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}]}, {}

    server.responder = responder
    _answers(tmp_path, 3)
    entry = defaults("models.*", source="api", backend="openai", api_base=server.base, api_model="gpt-judge",
                     api_key_env=ENV)
    out = judge_winrate(answers=tmp_path / "answers.parquet", reference=tmp_path / "ref.parquet", judge_dir=tmp_path,
                        judge_prompt=[], summary=tmp_path / "s.json", judged=tmp_path / "j.parquet", seed=0,
                        backend=backend_settings(entry, defaults("generation")), benchmark=_settings(), run=RUN)
    assert len(server.requests) == 6 + 2  # two games per question, plus two continuations
    continued = [r["json"]["messages"] for r in server.requests if len(r["json"]["messages"]) == 4]
    assert len(continued) == 2 and all(m[3]["content"] == ah.CONTINUE_PROMPT for m in continued)
    assert out["win_rate"] == 1.0 and out["n_valid_games"] == 6 and out["n_retried"] == 2
    assert out["protocol"] == "arena_hard" and out["reference_name"] == "gpt-4-0314" and out["n"] == 3
    assert not any(k.startswith("lc_") for k in out)  # Arena-Hard v0.1: no length control
    assert pl.read_parquet(tmp_path / "j.parquet").height == 6


def test_judge_winrate_arena_hard_with_a_local_judge_and_a_prompt_file(tiny_llama, tmp_path) -> None:
    """The local path end to end: the tiny random judge writes no verdicts, which are counted."""
    from teachfit.evaluation.winrate import judge_winrate

    _answers(tmp_path, 2)
    (tmp_path / "prompt.yaml").write_text('system: "Judge."\nuser: "{instruction}\\nA: {output_1}\\nB: {output_2}"\n')
    backend = backend_settings(defaults("models.*", source="random"), defaults("generation", batch_size=4))
    out = judge_winrate(answers=tmp_path / "answers.parquet", reference=tmp_path / "ref.parquet", judge_dir=tiny_llama,
                        judge_prompt=[str(tmp_path / "prompt.yaml")], summary=tmp_path / "s.json",
                        judged=tmp_path / "j.parquet", seed=0, backend=backend,
                        benchmark=_settings(judge_max_new_tokens=4), run=RUN, threads=1)
    judged = pl.read_parquet(tmp_path / "j.parquet")
    assert judged.height == 4 and (judged["attempts"] >= 1).all()
    assert out["n_games"] == 4 and out["n_valid_games"] + out["n_invalid_games"] == 4
