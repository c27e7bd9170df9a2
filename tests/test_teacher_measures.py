"""Teacher-compatibility measures beside CAR (issue 25): token ranks from the scoring pass, the
Rank-Surprisal Ratio, per-measure rho intervals in rank-teachers, and the per_instruction
(mixed) teacher."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from teachfit.generation.per_instruction import choose_per_instruction, criterion_values, mix_responses
from teachfit.io import read_json
from teachfit.models import materialize
from teachfit.schema import defaults
from teachfit.scoring.losses import (
    RANK_CLIP,
    ScoringSettings,
    convention_settings,
    encode_pairs,
    load_scoring_model,
    score_pairs,
    score_pairs_naive,
    token_nll_and_rank,
)
from teachfit.scoring.metrics import dataset_rsr, rank_surprisal_ratio
from teachfit.studies.recommend import RANKING_METRICS, bootstrap_rho, rank_teachers
from teachfit.studies.teacher import add_mixed_margins
from teachfit.workflow.config import validate_config

# --------------------------------------------------------------------------- ranks and RSR by hand


def test_token_ranks_and_nll_of_a_fixed_logits_tensor_and_the_rsr_by_hand():
    import torch

    logits = torch.tensor([[2.0, 1.0, 0.0],    # target 0: the argmax -> rank 1
                           [1.0, 3.0, 1.0],    # target 2: one strictly higher, a tie with 0 -> rank 2
                           [5.0, 4.0, 3.0]])   # target 2: two higher -> rank 3
    targets = torch.tensor([0, 2, 2])
    nll, rank = token_nll_and_rank(logits, targets)
    by_hand_nll = [math.log(math.exp(2) + math.exp(1) + 1) - 2,
                   math.log(2 * math.e + math.exp(3)) - 1,
                   math.log(math.exp(5) + math.exp(4) + math.exp(3)) - 3]
    assert rank.tolist() == [1, 2, 3]
    np.testing.assert_allclose(nll.numpy(), by_hand_nll, rtol=1e-6)
    # one response of these three tokens: RSR = mean rank / mean NLL = sum rank / sum NLL
    rsr = rank_surprisal_ratio([2.0], [sum(by_hand_nll) / 3])
    assert rsr[0] == pytest.approx(6 / sum(by_hand_nll))
    # a data set of two responses: the ratio of means, not the mean of ratios
    assert dataset_rsr([2.0, 10.0], [0.5, 2.0]) == pytest.approx(6.0 / 1.25)
    assert dataset_rsr([2.0, 10.0], [0.5, 2.0]) != pytest.approx(np.mean([4.0, 5.0]))
    assert math.isnan(rank_surprisal_ratio([1.0], [0.0])[0])  # no surprisal: undefined, never inf
    # a target below 150 other entries has rank 151; the RSR mean clips it at RANK_CLIP = 100
    wide = torch.arange(200, dtype=torch.float32)[None, :]
    _, r = token_nll_and_rank(wide, torch.tensor([49]))
    assert r.item() == 151 and min(r.item(), RANK_CLIP) == 100


# --------------------------------------------------------------------------- ranks from the engine


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "llama"
    materialize("tiny_llama", {"source": "random", "arch": "llama"}, out)
    return out


QS = ["Name a colour.", "What is 2 + 3?", "Write a word that rhymes with cat.", "Say hi."]
RS = ["Blue is a colour of the sky.", "2 + 3 is 5.", "Hat rhymes with cat, and so does bat.", ""]


def test_engine_ranks_equal_a_direct_computation_from_the_logits(tiny):
    """The batched engine's rank columns = ranks computed here, from one plain forward pass per
    pair and full logits, over the L(A|Q) tokens; and they come from the same pass as the losses
    (the loss columns equal the naive reference's)."""
    import torch

    settings = ScoringSettings.from_dict({**convention_settings(defaults("scoring"), "chat"), "batch_tokens": 64})
    fast = score_pairs(tiny, QS, RS, settings)
    model, tok = load_scoring_model(tiny)
    for e, row in zip(encode_pairs(tok, QS, RS, settings), fast.iter_rows(named=True), strict=True):
        s, t = e.a_span
        if t <= s:
            assert math.isnan(row["mean_rank_a_given_q"]) and math.isnan(row["mean_rank_clip_a_given_q"])
            continue
        with torch.inference_mode():
            logits = model(input_ids=torch.tensor([e.joint])).logits[0].float()
        ranks = []
        for j in range(s, t):
            ranks.append(1 + int((logits[j - 1] > logits[j - 1, e.joint[j]]).sum()))
        assert row["mean_rank_a_given_q"] == pytest.approx(np.mean(ranks), rel=1e-12)
        assert row["mean_rank_clip_a_given_q"] == pytest.approx(np.mean(np.minimum(ranks, RANK_CLIP)), rel=1e-12)
        assert max(ranks) > 1  # a random model: not every token is its argmax
    slow = score_pairs_naive(tiny, QS, RS, settings)
    for col in ("loss_a_given_q", "mean_rank_a_given_q", "mean_rank_clip_a_given_q"):
        np.testing.assert_allclose(fast[col].to_numpy(), slow[col].to_numpy(), rtol=1e-5, err_msg=col)


# --------------------------------------------------------------------------- per-instruction choice


def _cands() -> dict[str, pl.DataFrame]:
    """Three candidates for instructions q1..q3 (q4 answered by a and b only)."""
    return {
        "a": pl.DataFrame({"id": ["q1", "q2", "q3", "q4"], "instruction": ["1", "2", "3", "4"],
                           "response": ["a1", "a2", "a3", "a4"], "reward": [3.0, 1.0, 2.0, 5.0],
                           "loss_a_given_q": [2.0, 1.0, 3.0, 1.0]}),
        "b": pl.DataFrame({"id": ["q3", "q2", "q1", "q4"], "instruction": ["3", "2", "1", "4"],
                           "response": ["b3", "b2", "b1", "b4"], "reward": [2.0, 4.0, 1.0, 5.0],
                           "loss_a_given_q": [1.0, 3.0, 2.0, 1.0]}),
        "c": pl.DataFrame({"id": ["q1", "q2", "q3"], "instruction": ["1", "2", "3"],
                           "response": ["c1", "c2", "c3"], "reward": [2.0, 4.0, 9.0],
                           "loss_a_given_q": [0.5, 0.2, float("nan")]}),
    }


@pytest.mark.parametrize(("criterion", "expected"), [
    # GRAPE: lowest L(A|Q); q3: c has no loss (empty response) -> b (1.0 < a's 3.0)
    ("student_likelihood", ["c1", "c2", "b3"]),
    # reward: q2 ties b and c at 4.0 -> b, listed first
    ("reward", ["a1", "b2", "c3"]),
    # car = r / (1 + L): q1 a 1.0, b 0.33, c 1.33; q2 a 0.5, b 1.0, c 3.33; q3 a 0.5, b 1.0, c NaN
    ("car", ["c1", "c2", "b3"]),
])
def test_per_instruction_picks_the_expected_response_for_each_criterion(criterion, expected):
    chosen, report = choose_per_instruction(_cands(), criterion, {"beta": 1.0, "reward_offset": 0.0})
    assert chosen["response"].to_list() == expected
    assert chosen["id"].to_list() == ["q1", "q2", "q3"]  # the first candidate's order
    assert report["incomplete"] == 1 and report["no_value"] == 0 and report["chosen"] == 3  # q4: c is missing
    assert sum(report["chosen_per_generator"].values()) == 3


def test_per_instruction_ties_go_to_the_first_listed_generator():
    tie = {g: pl.DataFrame({"id": ["q1", "q2"], "instruction": ["1", "2"], "response": [f"{g}1", f"{g}2"],
                            "reward": [1.0, 1.0], "loss_a_given_q": [0.7, 0.7]}) for g in ("x", "y", "z")}
    for order in (["x", "y", "z"], ["z", "x", "y"], ["y", "z", "x"]):
        for criterion in ("student_likelihood", "reward", "car"):
            chosen, _ = choose_per_instruction({g: tie[g] for g in order}, criterion,
                                               {"beta": 1.0, "reward_offset": 0.0})
            assert chosen["chosen_from"].to_list() == [order[0]] * 2, (order, criterion)


def test_car_criterion_never_chooses_a_non_positive_reward_and_bad_criterion_is_named():
    df = pl.DataFrame({"reward": [-1.0, 2.0], "loss_a_given_q": [0.1, 1.0]})
    v = criterion_values(df, "car", {"beta": 1.0, "reward_offset": 0.0})
    assert math.isnan(v[0]) and v[1] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="per_instruction.criterion: 'ppl'"):
        criterion_values(df, "ppl")


def test_mix_responses_rule_writes_a_generations_table_and_a_report(tmp_path):
    cands, scores = [], []
    for g, df in _cands().items():
        p = tmp_path / f"{g}.parquet"
        df.drop("loss_a_given_q").with_columns(pl.lit(0).alias("sample_idx"), pl.lit(g).alias("generator")).write_parquet(p)
        s = tmp_path / f"{g}.scores.parquet"
        df.select("id", "loss_a_given_q").write_parquet(s)
        cands.append(str(p))
        scores.append(str(s))
    entry = {"generators": ["a", "b", "c"], "criterion": "student_likelihood", "student": "stu", "convention": "chat"}
    out = mix_responses(cands, scores, tmp_path / "gen.parquet", tmp_path / "choice.json", "mix", ["a", "b", "c"],
                        entry, {"beta": 1.0, "reward_offset": 0.0})
    back = pl.read_parquet(tmp_path / "gen.parquet")
    assert back.equals(out)
    assert back["response"].to_list() == ["c1", "c2", "b3"]
    assert back["generator"].unique().to_list() == ["mix"] and back["sample_idx"].to_list() == [0, 0, 0]
    assert "reward" not in back.columns and back["chosen_reward"].to_list() == [2.0, 4.0, 2.0]
    report = read_json(tmp_path / "choice.json")
    assert report["chosen_per_generator"] == {"a": 0, "b": 1, "c": 2} and report["incomplete"] == 1


def test_per_instruction_config_errors():
    from teachfit.schema import ConfigError, load_yaml

    base = load_yaml("tests/configs/tiny.yaml")
    base["generators"]["mix"] = {"kind": "per_instruction",
                                 "per_instruction": {"generators": ["t_greedy", "nope"], "student": "tiny_base"}}
    with pytest.raises(ConfigError, match=r"generators.mix.per_instruction.generators\[1\]: unknown generator 'nope'"):
        validate_config(base)
    base["generators"]["mix"]["per_instruction"]["generators"] = ["t_greedy", "t_best2"]
    cfg = validate_config(base)
    assert cfg["generators"]["mix"]["per_instruction"]["criterion"] == "student_likelihood"
    assert cfg["generators"]["mix"]["per_instruction"]["convention"] == "chat"


# --------------------------------------------------------------------------- rank-teachers --measured


METRICS = pl.DataFrame({
    "generator": ["g1", "g2", "g3", "g4", "mix"], "base": ["b"] * 5, "n": [8] * 5,
    "reward": [3.0, 4.0, 2.0, 3.5, 3.8], "length": [40.0, 20.0, 60.0, 30.0, 25.0],
    "ppl_base": [5.0, 9.0, 3.0, 4.0, 2.0], "ifd_base": [0.8, 0.9, 0.5, 0.7, 0.95],
    "ppl_ref": [2.0, 2.5, 3.0, 1.5, 2.2], "ifd_ref": [0.4, 0.6, 0.5, 0.3, 0.45],
    "car": [0.60, 0.55, 0.70, 0.65, 0.75], "rsr_base": [2.0, 1.0, 4.0, 3.0, 1.5],
})
PERF = pl.DataFrame({"base": ["b"] * 5, "generator": ["g1", "g2", "g3", "g4", "mix"],
                     "performance": [0.30, 0.50, 0.10, 0.20, 0.45], "performance_stderr": [0.02] * 5})


def test_rank_teachers_measured_has_a_rho_and_interval_per_measure_and_names_the_best(tmp_path):
    dm = tmp_path / "dm.csv"
    METRICS.write_csv(dm)
    perf = add_mixed_margins(PERF, ["mix"])
    perf.write_csv(tmp_path / "perf.csv")
    out = {k: tmp_path / f"{k}.{ext}" for k, ext in (("table", "csv"), ("figure", "png"), ("verdict", "rst"))}
    boot = defaults("teacher.ranking.bootstrap", n=200)
    df = rank_teachers(dm, [], [str(tmp_path / "perf.csv")], out["table"], out["figure"], out["verdict"],
                       generators=["g1", "g2", "g3", "g4", "mix"], sources={}, join_generators=[],
                       style=defaults("analysis.figures", formats=["png"]), bootstrap=boot)
    from scipy import stats

    for m, (direction, _) in RANKING_METRICS.items():
        for col in (f"{m}_rho", f"{m}_rho_low", f"{m}_rho_high"):
            assert col in df.columns and df[col].n_unique() == 1, col
        sign = 1 if direction == "higher" else -1
        joined = METRICS.join(PERF, on=["base", "generator"])
        expected = stats.spearmanr(sign * joined[m].to_numpy(), joined["performance"].to_numpy()).statistic
        assert df[f"{m}_rho"][0] == pytest.approx(expected), m
        lo, hi = df[f"{m}_rho_low"][0], df[f"{m}_rho_high"][0]
        assert -1.0 <= lo <= hi <= 1.0, m
    # rsr (lower first) orders the 5 teachers as fine-tuning did: rho = 1, the best measure
    assert df["rsr_base_rho"][0] == pytest.approx(1.0)
    assert df["best_measure"].unique().to_list() == ["rsr_base"]
    verdict = out["verdict"].read_text()
    assert "closest to the measured ranking was RSR under the student (rho = 1, 95% bootstrap interval" in verdict
    # the mixed teacher: 0.45 < g2's 0.50 -> did not beat every single teacher, margin -0.05
    mix = df.filter(pl.col("generator") == "mix").row(0, named=True)
    assert mix["mixed"] is True and mix["beats_every_single"] is False
    assert mix["margin_vs_best_single"] == pytest.approx(-0.05)
    assert mix["margin_low"] < -0.05 < mix["margin_high"]
    assert "``mix`` did not beat every single teacher" in verdict
    assert "within noise: the interval contains 0" in verdict
    # the interval is reproducible (fixed seed) and resamples generators
    again = bootstrap_rho([1, 2, 3, 4, 5], [1, 2, 3, 5, 4], boot["n"], boot["seed"])
    assert again == bootstrap_rho([1, 2, 3, 4, 5], [1, 2, 3, 5, 4], boot["n"], boot["seed"])
    assert again[0] < 0.9 <= again[1]


# --------------------------------------------------------------------------- select-data --per-instruction


def test_select_data_per_instruction_keeps_the_most_student_likely_response_per_instruction(tmp_path):
    from teachfit.studies.recommend import select_data

    pairs = pl.DataFrame({
        "id": ["u1", "u2", "u3", "u4", "u5", "u6"],
        "instruction": ["A", "A", "A", "B", "B", "C"],
        "response": ["a1", "a2", "a3", "b1", "b2", "c1"],
        "system": [None, None, None, None, None, None],
        "source_index": [0, 1, 2, 3, 4, 5],
    }, schema_overrides={"system": pl.String})
    scores = pl.DataFrame({
        "id": ["u1", "u2", "u3", "u4", "u5", "u6"],
        "loss_q": [1.0] * 6, "loss_a": [2.0] * 6,
        "loss_a_given_q": [1.5, 0.5, 0.9, 1.2, 1.2, 0.7],  # A: u2; B: a tie -> u4 (earlier row)
        "n_a_tokens": [5] * 6, "n_instruction_tokens": [3] * 6, "truncated": [False] * 6,
    })
    pairs.write_parquet(tmp_path / "pairs.parquet")
    scores.write_parquet(tmp_path / "scores.parquet")
    pl.DataFrame({"source_index": [], "reason": [], "instruction": []},
                 schema={"source_index": pl.Int64, "reason": pl.String, "instruction": pl.String}
                 ).write_parquet(tmp_path / "rejected.parquet")
    out = {k: tmp_path / f"{k}.{ext}" for k, ext in (("selected", "jsonl"), ("decisions", "csv"), ("summary", "csv"))}
    table = select_data(tmp_path / "pairs.parquet", tmp_path / "rejected.parquet", tmp_path / "scores.parquet",
                        out["selected"], out["decisions"], out["summary"], "u",
                        {"metric": "loss", "top_percent": 100.0, "per_instruction": "student_likelihood"})
    kept = table.filter(pl.col("kept"))["id"].to_list()
    assert sorted(kept) == ["u2", "u4", "u6"]
    assert table.filter(pl.col("reason") == "not_chosen_per_instruction")["id"].sort().to_list() == ["u1", "u3", "u5"]
    summary = pl.read_csv(out["summary"])
    assert summary.filter(pl.col("reason") == "total")["rows"][0] == 6
    assert len(out["selected"].read_text().splitlines()) == 3


# --------------------------------------------------------------------------- the workflow


@pytest.fixture(scope="module")
def wf(tmp_path_factory) -> Path:
    from workflow_utils import copy_workflow

    return copy_workflow(tmp_path_factory.mktemp("wf"))


MIXED = ("--configfile", "tests/configs/tiny.yaml", "tests/configs/tiny_mixed.yaml")


def test_mixed_teacher_enters_the_teacher_study_dag(wf):
    """t_mix: chosen from the three teachers' responses under tiny_base's scores, then rewards, scores,
    SFT, evaluation and win rates like any generator; rank_teachers compares with the measured ranks."""
    from workflow_utils import dry_run

    jobs = dry_run(wf, *MIXED)
    assert jobs["mix_responses"] == 1
    assert jobs["train_sft"] == 4 and jobs["evaluate_checkpoints"] == 4 and jobs["judge_winrate"] == 4
    assert jobs["score_rewards"] == 4 and jobs["score_losses"] == 16  # 4 generators x (student, reference) x 2
    assert jobs["build_teacher_performance"] == 1 and jobs["rank_teachers"] == 1


@pytest.mark.slow
def test_mixed_teacher_end_to_end(tiny_run, tmp_path):
    """On a copy of the session's completed tiny run, so that only the mixed teacher's jobs (and
    the tables that read them) run: the single teachers' data, SFT and evaluation are reused."""
    import shutil

    from workflow_utils import snakemake

    wf = tmp_path / "wf"
    shutil.copytree(tiny_run, wf, symlinks=True)
    snakemake(wf, *MIXED, "--", "results/tables/teacher_ranking.csv", "results/tables/teacher_performance.csv",
              timeout=3000)
    res = wf / "results"
    choice = read_json(res / "generations" / "tiny" / "t_mix.choice.json")
    responses = pl.read_parquet(res / "responses" / "tiny" / "t_mix.parquet")
    assert responses.height == choice["chosen"] == sum(choice["chosen_per_generator"].values())
    assert set(responses["chosen_from"]) <= {"t_greedy", "t_best2", "t_fewshot"}
    perf = pl.read_csv(res / "tables" / "teacher_performance.csv")
    mix = perf.filter(pl.col("generator") == "t_mix").row(0, named=True)
    assert mix["mixed"] is True and mix["beats_every_single"] is not None
    assert perf.filter(pl.col("generator") != "t_mix")["beats_every_single"].null_count() == 3
    ranking = pl.read_csv(res / "tables" / "teacher_ranking.csv")
    assert ranking.height == 4 and ranking["rsr_base"].is_finite().all()
    for m in RANKING_METRICS:
        assert {f"{m}_rho", f"{m}_rho_low", f"{m}_rho_high"} <= set(ranking.columns)
    assert ranking["best_measure"].n_unique() == 1
    scores = pl.read_parquet(res / "scores" / "tiny" / "t_mix" / "tiny_base.chat.parquet")
    assert (scores["mean_rank_clip_a_given_q"].drop_nans() >= 1).all()


def test_select_data_cli_per_instruction_reaches_the_rule(wf, capfd, tmp_path):
    import yaml

    from teachfit.workflow.cli import main
    from workflow_utils import planned_jobs

    data = tmp_path / "multi.jsonl"
    data.write_text("".join(json.dumps({"instruction": "Say hi.", "output": o}) + "\n" for o in ("Hi!", "Hello.")))
    rc = main(["select-data", "--configfile", "tests/configs/tiny.yaml", "--data", str(data), "--student", "tiny_base",
               "--metric", "loss", "--per-instruction", "student_likelihood", "-C", str(wf), "-n", "--cores", "1"])
    out = capfd.readouterr()
    assert rc == 0, out.err
    assert planned_jobs(out.out + out.err)["select_data"] == 1
    overlay = yaml.safe_load((wf / "results" / "cli" / "select_data.multi.yaml").read_text())
    assert overlay["select_data"]["multi"]["per_instruction"] == "student_likelihood"


def test_performance_stderr_and_the_mixed_margin_interval(tmp_path):
    """performance_stderr = sqrt(sum se^2) / k over the averaged scores (lm-eval's and the win-rate
    headline's); the mixed teacher's margin over the best single teacher gets a normal 95% interval."""
    from teachfit.io import write_json, write_parquet
    from teachfit.studies.teacher import build_teacher_performance

    evals, winrates, runs = [], [], []
    for g, acc, se, lc, lc_se in (("s1", 0.5, 0.03, 0.6, 0.04), ("s2", 0.4, 0.03, 0.5, 0.04),
                                  ("mix", 0.7, 0.03, 0.7, 0.04)):
        p = tmp_path / f"{g}.parquet"
        write_parquet(pl.DataFrame({"base": ["b"], "generator": [g], "step": [4], "task": ["tf_arith"],
                                    "metric": ["exact_match,flexible-extract"], "value": [acc], "stderr": [se],
                                    "is_final": [True]}), p)
        evals.append(str(p))
        write_json({"win_rate": lc, "lc_win_rate_minimal_inhouse": lc, "lc_stderr_minimal_inhouse": lc_se},
                   tmp_path / f"{g}.json")
        winrates.append(str(tmp_path / f"{g}.json"))
        runs.append({"base": "b", "generator": g, "benchmark": "h", "headline": "lc_win_rate_minimal_inhouse"})
    perf = defaults("performance", include_winrate=True, metrics={"tf_arith": "exact_match,flexible-extract"})
    df = build_teacher_performance(evals, winrates, tmp_path / "perf.csv", runs, perf, mixed=["mix"])
    rows = {r["generator"]: r for r in df.to_dicts()}
    assert rows["s1"]["performance_stderr"] == pytest.approx(math.sqrt(0.03 ** 2 + 0.04 ** 2) / 2)
    assert rows["s1"]["mixed"] is False and rows["s1"]["beats_every_single"] is None
    mix = rows["mix"]
    assert mix["margin_vs_best_single"] == pytest.approx(0.7 - 0.55)  # s1: (0.5 + 0.6) / 2
    half = 1.959963984540054 * math.sqrt(2) * rows["s1"]["performance_stderr"]
    assert (mix["margin_low"], mix["margin_high"]) == (pytest.approx(0.15 - half), pytest.approx(0.15 + half))
    assert mix["beats_every_single"] is True


@pytest.mark.parametrize("undefined", [["g2"], ["g1", "g2", "g3", "g4", "mix"]])
def test_rank_teachers_with_undefined_performance_says_so(tmp_path, undefined):
    """A teacher whose measured performance is NaN (a win rate with no parseable judgment: the
    paper-shaped rehearsal's random judge) gets no measured rank; the verdict names it, and when
    every performance is undefined it says the check cannot be made instead of failing."""
    dm = tmp_path / "dm.csv"
    METRICS.write_csv(dm)
    perf = PERF.with_columns(pl.when(pl.col("generator").is_in(undefined)).then(float("nan"))
                             .otherwise(pl.col("performance")).alias("performance"))
    perf.write_csv(tmp_path / "perf.csv")
    out = {k: tmp_path / f"{k}.{ext}" for k, ext in (("table", "csv"), ("figure", "png"), ("verdict", "rst"))}
    df = rank_teachers(dm, [], [str(tmp_path / "perf.csv")], out["table"], out["figure"], out["verdict"],
                       generators=["g1", "g2", "g3", "g4", "mix"], sources={}, join_generators=[],
                       style=defaults("analysis.figures", formats=["png"]),
                       bootstrap=defaults("teacher.ranking.bootstrap", n=50))
    verdict = out["verdict"].read_text()
    assert df.filter(pl.col("generator").is_in(undefined))["performance_rank"].null_count() == len(undefined)
    assert df["rho_n"][0] == 5 - len(undefined)
    assert "Measured performance is undefined" in verdict and "``g2``" in verdict
    if len(undefined) == 5:
        assert "cannot be made" in verdict and "Spearman rho" not in verdict
    else:
        # the 4 teachers with a performance: g1 0.30 is now the best single one
        assert "``mix`` performed best" in verdict and "over 4 teachers" in verdict
    assert out["figure"].exists()
