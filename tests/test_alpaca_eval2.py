"""AlpacaEval 2 protocol: order switching, logprob parsing and win rates checked against the
installed alpaca-eval package's own code; AlpacaEval's LC through the package with the hub
download stubbed by a file the test writes; the judge through an OpenAI-compatible endpoint
(a fake server) and a local model."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from test_openai_backend import ENV, FakeServer, server  # noqa: F401 - the fixture

from teachfit.schema import defaults
from teachfit.evaluation import alpaca_eval2 as ae
from teachfit.evaluation.winrate_judges import LocalChatJudge, chat_text, load_judge_prompt, next_token_top_logprobs
from teachfit.generation.engines import backend_settings
from teachfit.io import write_parquet

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
    from alpaca_eval.completion_parsers import logprob_parser
    from alpaca_eval.metrics import glm_winrate
    from alpaca_eval.metrics.winrate import get_winrate
    from alpaca_eval.processors import RandomSwitchTwoColumnsProcessor

INSTR = [f"Instruction number {i}: describe item {i}." for i in range(40)]


# --------------------------------------------------------------------------- conventions vs the package


def test_order_switch_is_alpaca_evals() -> None:
    import pandas as pd

    df = pd.DataFrame({"instruction": INSTR, "output_1": ["r"] * 40, "output_2": ["m"] * 40})
    proc = RandomSwitchTwoColumnsProcessor(two_columns_to_switch=["output_1", "output_2"],
                                           random_seed_columns=["instruction"], _switch_column="is_switched_outputs")
    expected = proc.preprocess(df)["is_switched_outputs"].tolist()
    ours = [ae.is_switched_outputs(q) for q in INSTR]
    assert ours == expected
    assert 5 < sum(ours) < 35  # both orders occur


@pytest.mark.parametrize("top", [
    [("m", -0.2), ("M", -1.8), ("The", -5.0)],
    [("M", -0.01), ("Both", -6.0), ("m", -4.6)],
    [("m", -0.3), ("x", -2.0)],  # M outside the top 5: probability 0
    [("M", -0.3), (" m", -1.0)],  # " m" is not the token "m"
    [("M", -0.7), ("m", -0.7)],
])
def test_logprob_preference_is_alpaca_evals_parser(top) -> None:
    completion = {"logprobs": {"content": [{"top_logprobs": [{"token": t, "logprob": lp} for t, lp in top]}]}}
    expected = logprob_parser(completion, numerator_token="m", denominator_tokens=["m", "M"], is_binarize=False)[0]
    assert ae.logprob_preference(top) == pytest.approx(expected, abs=1e-12)


def test_logprob_preference_without_labels_is_nan() -> None:
    assert math.isnan(ae.logprob_preference([("The", -0.1), ("A", -2.0)]))
    assert ae.logprob_preference([("m", 0.0)]) == 1.0 and ae.logprob_preference([("M", 0.0)]) == 2.0


def test_winrate_equals_alpaca_evals_get_winrate() -> None:
    rng = np.random.default_rng(0)
    pref = rng.uniform(1.0, 2.0, 60)
    pref[:5] = 1.5
    pref[5:8] = np.nan
    pref[8:12] = [1.0, 2.0, 2.0, 1.0]
    pref[12] = 0.0  # legacy draw
    ours = ae.winrate_from_preferences(pref)
    theirs = get_winrate([{"preference": p} for p in pref])
    assert ours["win_rate"] == pytest.approx(theirs["win_rate"] / 100, abs=1e-12)
    assert ours["standard_error"] == pytest.approx(theirs["standard_error"] / 100, abs=1e-12)
    assert ours["discrete_win_rate"] == pytest.approx(theirs["discrete_win_rate"] / 100, abs=1e-12)
    for key in ("n_wins", "n_wins_base", "n_draws", "n_total"):
        assert ours[key] == theirs[key], key


# --------------------------------------------------------------------------- annotate with a fake judge


def _shown(conv: list[dict[str, str]]) -> tuple[str, str]:
    user = conv[1]["content"]
    first = user.split('"model_identifier": "m",\n        "output": """')[1].split('"""')[0]
    second = user.split('"model_identifier": "M",\n        "output": """')[1].split('"""')[0]
    return first, second


def model_preferring_judge(p_model: float, calls: list) -> Any:
    """Top-5 first tokens giving the output that starts with MODEL probability p_model."""
    def fn(convs: list[list[dict[str, str]]]) -> list[list[tuple[str, float]]]:
        calls.append(convs)
        out = []
        for conv in convs:
            first, _ = _shown(conv)
            p_m = p_model if first.startswith("MODEL") else 1.0 - p_model
            out.append([("m", math.log(p_m)), ("M", math.log(1.0 - p_m)), ("The", -9.0)])
        return out
    return fn


def test_annotate_maps_both_orders_back_and_skips_identical_pairs() -> None:
    n = 12
    model = [f"MODEL answer {i}" for i in range(n)]
    ref = [f"reference answer {i}" for i in range(n)]
    model[3] = ref[3]  # identical outputs: 1.5, no judge call
    calls: list = []
    df = ae.annotate(INSTR[:n], model, ref, model_preferring_judge(0.8, calls), ids=[f"q{i}" for i in range(n)],
                     indices=list(range(n)), generator_1="ref", generator_2="student", annotator="judge")
    assert df.columns == list(ae.JUDGED_COLUMNS)
    assert len(calls) == 1 and len(calls[0]) == n - 1
    assert df["preference"][3] == 1.5 and df["top_logprobs"][3] == ""
    others = [p for i, p in enumerate(df["preference"].to_list()) if i != 3]
    assert others == pytest.approx([1.8] * (n - 1))  # the model wins with 0.8 in whichever order it was shown
    switched = df["is_switched_outputs"].to_list()
    assert any(switched) and not all(switched)
    for conv, i in zip(calls[0], [i for i in range(n) if i != 3]):
        first, second = _shown(conv)
        assert (first, second) == ((model[i], ref[i]) if switched[i] else (ref[i], model[i]))
        assert conv[0]["role"] == "system" and conv[0]["content"] == ae.SYSTEM_PROMPT
        assert conv[1]["content"].startswith("I am building a leaderboard") and INSTR[i] in conv[1]["content"]
    stats = ae.summarize_annotations(df)
    assert stats["win_rate"] == pytest.approx((0.8 * (n - 1) + 0.5) / n)
    assert stats["n_identical"] == 1 and stats["n_unparsed"] == 0 and stats["n_draws"] == 1
    assert stats["p_first"] == pytest.approx(np.mean([0.8 if s else 0.2 for i, s in enumerate(switched) if i != 3]))
    assert df["win"].to_list() == [0.5 if i == 3 else 1.0 for i in range(n)]


def test_annotate_counts_unparsed_judgments() -> None:
    def no_labels(convs):
        return [[("Sure", -0.1), ("I", -3.0)] for _ in convs]

    df = ae.annotate(INSTR[:3], ["a", "b", "c"], ["x", "y", "z"], no_labels, ids=["0", "1", "2"], indices=[0, 1, 2],
                     generator_1="r", generator_2="s", annotator="j")
    assert df["preference"].is_nan().all()
    stats = ae.summarize_annotations(df)
    assert stats["n_unparsed"] == 3 and stats["n_total"] == 0 and math.isnan(stats["win_rate"])


def test_annotate_errors() -> None:
    with pytest.raises(ValueError, match="must align"):
        ae.annotate(INSTR[:2], ["a"], ["x", "y"], lambda c: [], ids=["0", "1"], indices=[0, 1],
                    generator_1="r", generator_2="s", annotator="j")
    with pytest.raises(RuntimeError, match="returned 0 answers for 2"):
        ae.annotate(INSTR[:2], ["a", "b"], ["x", "y"], lambda c: [], ids=["0", "1"], indices=[0, 1],
                    generator_1="r", generator_2="s", annotator="j")


def test_judge_prompt_file_replaces_our_wording(tmp_path) -> None:
    path = tmp_path / "prompt.yaml"
    path.write_text('system: "SYS"\nuser: "Q={instruction} | m={output_1} | M={output_2} | {not_a_slot}"\n')
    conv = ae.judge_conversation("do {output_2}", "first", "second", prompt=load_judge_prompt(path))
    assert conv == [{"role": "system", "content": "SYS"},
                    {"role": "user", "content": "Q=do {output_2} | m=first | M=second | {not_a_slot}"}]
    path.write_text('system: "SYS"\nuser: "Q={instruction} {output_1}"\n')
    with pytest.raises(ValueError, match=r"lacks the placeholder\(s\) \{output_2\}"):
        load_judge_prompt(path)
    path.write_text('user: "x"\n')
    with pytest.raises(ValueError, match="exactly the keys 'system' and 'user'"):
        load_judge_prompt(path)


# --------------------------------------------------------------------------- AlpacaEval's LC, hub stubbed


def _fake_df_gamed(path: Path, n: int, seed: int = 0) -> Path:
    """A df_gamed.csv as AlpacaEval's hub file is laid out: two gamed baselines per instruction,
    columns model, index, preference (in [0, 1]), std_delta_len, instruction_difficulty,
    not_gamed_baseline; the first n rows carry index 0..n-1 in order."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0.0, 1.0, n)
    rows = []
    for model, sign in (("gpt4_gamed_verbose", 1.0), ("gpt4_gamed_concise", -1.0)):
        for i in range(n):
            x = sign * abs(rng.normal(1.0, 0.3))
            p = 1.0 / (1.0 + np.exp(-(1.5 * np.tanh(x) - 0.3 * difficulty[i])))
            rows.append({"model": model, "index": i, "preference": p, "std_delta_len": x,
                         "instruction_difficulty": difficulty[i], "not_gamed_baseline": False})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _synthetic_judged(n: int, seed: int) -> pl.DataFrame:
    """Annotations where longer model outputs win and quality is equal (true bias 0)."""
    rng = np.random.default_rng(seed)
    len_ref = rng.integers(200, 800, n)
    len_model = len_ref + rng.integers(-300, 600, n)
    d = (len_model - len_ref).astype(float)
    p_model = 1.0 / (1.0 + np.exp(-2.5 * np.tanh(d / d.std(ddof=1))))
    pref = 1.0 + np.clip(p_model + rng.normal(0, 0.05, n), 0.0, 1.0)
    return pl.DataFrame({
        "id": [f"{i:03d}" for i in range(n)], "index": list(range(n)), "instruction": [f"q{i}" for i in range(n)],
        "output_1": ["r" * int(k) for k in len_ref], "output_2": ["m" * int(k) for k in len_model],
        "generator_1": ["gpt4_turbo"] * n, "generator_2": ["student"] * n, "annotator": ["judge"] * n,
        "preference": pref, "is_switched_outputs": [False] * n, "p_win": pref - 1.0,
        "win": np.where(pref > 1.5, 1.0, np.where(pref < 1.5, 0.0, 0.5)),
        "len_model": len_model, "len_ref": len_ref, "top_logprobs": [""] * n,
    })


@pytest.fixture()
def stubbed_hub(monkeypatch, tmp_path):
    calls: list[tuple[str, str]] = []
    gamed = _fake_df_gamed(tmp_path / "df_gamed.csv", 200)

    def fake_download(repo_id, filename, **kw):
        calls.append((repo_id, filename))
        assert kw["repo_type"] == "dataset"
        return str(gamed)

    monkeypatch.setattr(glm_winrate, "hf_hub_download", fake_download)
    return calls


@pytest.mark.parametrize("glm", ["length_controlled_v1", "length_controlled_minimal"])
def test_alpaca_eval_lc_runs_the_package_with_the_hub_stubbed(stubbed_hub, tmp_path, glm) -> None:
    from teachfit.evaluation.winrate import inhouse_lc_fields

    weights_dir = Path(glm_winrate.__file__).parent / "weights"
    before = sorted(weights_dir.rglob("*")) if weights_dir.exists() else []
    judged = _synthetic_judged(150, seed=1)
    write_parquet(judged.sample(fraction=1.0, shuffle=True, seed=3), tmp_path / "judged.parquet")  # any row order
    summary = {"benchmark": "alpaca_eval2", **ae.summarize_annotations(judged)}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    out = ae.alpaca_eval_lc(judged=tmp_path / "judged.parquet", summary=tmp_path / "summary.json",
                            result=tmp_path / "lc.json", glm_name=glm)
    assert stubbed_hub == [("tatsu-lab/alpaca_eval", "df_gamed.csv")]  # the hub file, fetched once, stubbed
    assert json.loads((tmp_path / "lc.json").read_text()) == out
    assert out["benchmark"] == "alpaca_eval2" and out["alpaca_eval_glm"] == glm and out["alpaca_eval_version"] == "0.6.6"
    assert out["alpaca_eval_win_rate"] == pytest.approx(summary["win_rate"], abs=1e-12)  # same raw rate
    raw, lc = out["win_rate"], out["lc_win_rate_alpaca_eval"]
    assert raw > 0.6  # longer outputs win ...
    if glm == "length_controlled_minimal":
        # ... the minimal GLM removes the length effect, and agrees with the in-house fit of the same
        # formula up to its L1 / cross-validation regularisation
        assert abs(lc - 0.5) < 0.05
        inhouse = inhouse_lc_fields(judged, target="p_win")["lc_win_rate_minimal_inhouse"]
        assert lc == pytest.approx(inhouse, abs=0.03)
    assert 0.0 < lc < raw and 0.0 <= out["lc_stderr_alpaca_eval"] < 0.1
    assert (sorted(weights_dir.rglob("*")) if weights_dir.exists() else []) == before  # nothing written there


def test_alpaca_eval_lc_row_order_and_index(stubbed_hub, tmp_path) -> None:
    """AlpacaEval's GLM reads each row's instruction index (its difficulty); the frame is indexed by
    the benchmark index and sorted, so the stored row order does not matter."""
    judged = _synthetic_judged(120, seed=2)
    frame = ae.annotations_frame(judged.reverse())
    assert frame.index.tolist() == list(range(120))
    a = ae.get_length_controlled_winrate(ae.annotations_frame(judged), "length_controlled_v1")
    b = ae.get_length_controlled_winrate(ae.annotations_frame(judged.reverse()), "length_controlled_v1")
    assert a["length_controlled_winrate"] == pytest.approx(b["length_controlled_winrate"], abs=1e-9)
    with pytest.raises(ValueError, match="duplicate instruction indices"):
        ae.annotations_frame(pl.concat([judged.head(2), judged.head(1)]))
    with pytest.raises(ValueError, match="glm_name 'v2' is not known"):
        ae.alpaca_eval_lc(judged=tmp_path / "x", summary=tmp_path / "y", result=tmp_path / "z", glm_name="v2")


def test_alpaca_eval_lc_of_the_reference_itself_is_one_half(stubbed_hub) -> None:
    judged = _synthetic_judged(30, seed=3).with_columns(pl.lit("gpt4_turbo").alias("generator_2"))
    out = ae.get_length_controlled_winrate(ae.annotations_frame(judged), "length_controlled_v1")
    assert out["length_controlled_winrate"] == pytest.approx(50.0)
    assert stubbed_hub == []  # AlpacaEval skips the GLM (and the download) for the baseline itself


# --------------------------------------------------------------------------- rule judge_winrate through an endpoint


def _api_backend(srv: FakeServer) -> dict:
    entry = defaults("models.*", source="api", backend="openai", api_base=srv.base, api_model="gpt-judge",
                     api_key_env=ENV)
    return backend_settings(entry, defaults("generation"))


def test_judge_winrate_alpaca_eval2_through_an_endpoint(server, tmp_path) -> None:  # noqa: F811
    from teachfit.evaluation.winrate import judge_winrate

    def responder(payload: dict[str, Any], k: int):
        assert payload["max_tokens"] == 1 and payload["temperature"] == 1.0
        assert payload["logprobs"] is True and payload["top_logprobs"] == 5
        assert [m["role"] for m in payload["messages"]] == ["system", "user"]
        first, _ = _shown(payload["messages"])
        p_m = 0.7 if first.startswith("MODEL") else 0.3
        top = [{"token": "m", "logprob": math.log(p_m)}, {"token": "M", "logprob": math.log(1 - p_m)}]
        choice = {"index": 0, "message": {"role": "assistant", "content": "m"}, "finish_reason": "length",
                  "logprobs": {"content": [{"token": "m", "logprob": top[0]["logprob"], "top_logprobs": top}]}}
        return 200, {"choices": [choice]}, {}

    server.responder = responder
    n = 6
    write_parquet(pl.DataFrame({"id": [f"{i:03d}" for i in range(n)], "instruction": INSTR[:n],
                                "response": [f"MODEL says {i}" for i in range(n)]}), tmp_path / "answers.parquet")
    ref = pl.DataFrame({"id": [f"{i:03d}" for i in reversed(range(n))], "response": [f"ref {i}" for i in reversed(range(n))],
                        "generator": ["gpt4_1106_preview"] * n})
    write_parquet(ref, tmp_path / "ref.parquet")
    settings = {"name": "alpaca_eval2", "protocol": "alpaca_eval2", "judge": "gpt4_turbo_judge", "reference_name": None,
                "length_controlled": "inhouse_minimal", "judge_max_new_tokens": 4096}
    out = judge_winrate(answers=tmp_path / "answers.parquet", reference=tmp_path / "ref.parquet", judge_dir=tmp_path,
                        judge_prompt=[], summary=tmp_path / "s.json", judged=tmp_path / "j.parquet", seed=0,
                        backend=_api_backend(server), benchmark=settings,
                        run={"dataset": "d", "generator": "g", "selection": "full", "base": "b"})
    assert len(server.requests) == n
    judged = pl.read_parquet(tmp_path / "j.parquet")
    assert judged["index"].to_list() == list(range(n))  # AlpacaEval's instruction order
    assert judged["generator_1"].unique().to_list() == ["gpt4_1106_preview"]  # from the reference table
    assert judged["preference"].to_list() == pytest.approx([1.7] * n)
    assert out["win_rate"] == pytest.approx(0.7) and out["stderr"] == pytest.approx(0.0, abs=1e-12)
    assert out["protocol"] == "alpaca_eval2" and out["n"] == n and out["n_unparsed"] == 0
    assert "lc_win_rate_minimal_inhouse" in out and out["lc_target_minimal_inhouse"] == "p_win"
    assert "lc_win_rate_alpaca_eval" not in out  # that one only comes from rule alpaca_eval_lc


# --------------------------------------------------------------------------- the local judge engine


def test_local_top_logprobs_match_a_direct_forward_pass(tiny_llama) -> None:
    import torch

    from teachfit.models import load_causal_lm, load_tokenizer

    backend = backend_settings(defaults("models.*", source="random"), defaults("generation", batch_size=2))
    judge = LocalChatJudge(tiny_llama, backend, threads=1, seed=0)
    convs = [ae.judge_conversation(q, "first output", "second, longer output") for q in INSTR[:3]]
    tops = judge.top_logprobs(convs, k=5, temperature=1.0)
    tok = load_tokenizer(tiny_llama)
    model = load_causal_lm(tiny_llama)
    for conv, top in zip(convs, tops):
        ids = tok(chat_text(tok, conv), add_special_tokens=not chat_text(tok, conv).startswith(tok.bos_token or "\0"),
                  return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].double(), -1)
        values, idx = torch.topk(logp, 5)
        assert [t for t, _ in top] == [tok.decode([int(i)]) for i in idx]
        assert [v for _, v in top] == pytest.approx(values.tolist(), abs=1e-6)
    assert next_token_top_logprobs(model, tok, [], 5, 2) == []


def test_chat_text_puts_the_system_turn_into_the_user_turn_when_the_template_rejects_it() -> None:
    class NoSystem:
        chat_template = "x"

        def apply_chat_template(self, conv, tokenize, add_generation_prompt):
            if conv[0]["role"] == "system":
                raise ValueError("System role not supported")
            return "|".join(f"{t['role']}:{t['content']}" for t in conv)

    conv = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert chat_text(NoSystem(), conv) == "user:S\n\nU"
    NoSystem.chat_template = None
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        chat_text(NoSystem(), conv)


def test_judge_winrate_alpaca_eval2_counts_a_judge_that_never_answers_m_or_M(server, tmp_path) -> None:  # noqa: F811
    from teachfit.evaluation.winrate import judge_winrate

    def responder(payload: dict[str, Any], k: int):
        top = [{"token": "Sure", "logprob": -0.1}, {"token": "I", "logprob": -2.5}]
        choice = {"index": 0, "message": {"role": "assistant", "content": "Sure"}, "finish_reason": "length",
                  "logprobs": {"content": [{"token": "Sure", "logprob": -0.1, "top_logprobs": top}]}}
        return 200, {"choices": [choice]}, {}

    server.responder = responder
    write_parquet(pl.DataFrame({"id": ["0", "1", "2"], "instruction": INSTR[:3], "response": ["a", "b", "c"]}),
                  tmp_path / "answers.parquet")
    write_parquet(pl.DataFrame({"id": ["0", "1", "2"], "response": ["x", "y", "c"]}), tmp_path / "ref.parquet")
    settings = {"name": "alpaca_eval2", "protocol": "alpaca_eval2", "judge": "j", "reference_name": "gpt4_turbo",
                "length_controlled": "inhouse_minimal", "judge_max_new_tokens": 4096}
    out = judge_winrate(answers=tmp_path / "answers.parquet", reference=tmp_path / "ref.parquet", judge_dir=tmp_path,
                        judge_prompt=[], summary=tmp_path / "s.json", judged=tmp_path / "j.parquet", seed=0,
                        backend=_api_backend(server), benchmark=settings,
                        run={"dataset": "d", "generator": "g", "selection": "full", "base": "b"})
    assert len(server.requests) == 2  # the identical pair "c" is not sent
    assert out["n_unparsed"] == 2 and out["n_identical"] == 1 and out["n_total"] == 1
    assert out["win_rate"] == 0.5  # only the identical pair is a valid preference (1.5)
    assert math.isnan(out["lc_win_rate_minimal_inhouse"])  # one parsed row cannot be fitted
