"""teachfit.correlate: Spearman/Kendall on hand-computed ranks, ties, constant columns; the teacher
study's performance and correlation tables (teachfit.studies.teacher) on files."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import polars as pl
import pytest

from teachfit.schema import defaults
from teachfit.correlate import correlation_table, rank_correlation
from teachfit.io import DataError, write_json, write_parquet
from teachfit.studies.teacher import build_teacher_performance, correlate_teacher_metrics

# Group A: x = 1..5, y = [5, 6, 7, 8, 7] (a tie in y).
#   Spearman: ranks y = [1, 2, 3.5, 5, 3.5]; centred rx = [-2,-1,0,1,2], ry = [-2,-1,.5,2,.5]
#   Σ rx·ry = 4 + 1 + 0 + 2 + 1 = 8; Σ rx² = 10; Σ ry² = 4 + 1 + .25 + 4 + .25 = 9.5
#   ρ = 8 / sqrt(10 · 9.5) = 8 / sqrt(95)
#   Kendall τ-b: of 10 pairs, 8 concordant, 1 discordant ((4,5): 8 → 7), 1 tied in y ((3,5))
#   τ_b = (8 - 1) / sqrt((10 - 0) · (10 - 1)) = 7 / sqrt(90)
RHO_A = 8 / math.sqrt(95)
TAU_A = 7 / math.sqrt(90)
# Group B: x = [1, 2, 3], y = [3, 2, 1]: perfectly reversed → ρ = τ = -1
# Group C: constant y → undefined → NaN


def _frame() -> pl.DataFrame:
    return pl.DataFrame({
        "base": ["A"] * 5 + ["B"] * 3 + ["C"] * 3,
        "ifd": [1, 2, 3, 4, 5, 1, 2, 3, 1, 2, 3],
        "reward": [2, 1, 4, 3, 5, 10, 20, 30, 1, 2, 3],
        "performance": [5.0, 6, 7, 8, 7, 3, 2, 1, 0.5, 0.5, 0.5],
    })


def test_rank_correlation_hand_computed():
    rho, p, n = rank_correlation([1, 2, 3, 4, 5], [5, 6, 7, 8, 7], "spearman")
    assert rho == pytest.approx(RHO_A) and n == 5 and 0 < p < 1
    tau, p, _ = rank_correlation([1, 2, 3, 4, 5], [5, 6, 7, 8, 7], "kendall")
    assert tau == pytest.approx(TAU_A) and 0 < p < 1
    assert rank_correlation([1, 2, 3], [3, 2, 1], "kendall")[0] == pytest.approx(-1.0)


def test_undefined_cases_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert math.isnan(rank_correlation([1, 2, 3], [4, 4, 4])[0])          # constant y
        assert math.isnan(rank_correlation([2, 2, 2], [1, 2, 3], "kendall")[0])  # constant x
        coef, p, n = rank_correlation([1, 2, float("nan")], [1, 2, 3])        # 2 complete pairs
        assert math.isnan(coef) and math.isnan(p) and n == 2
    with pytest.raises(ValueError, match="pearson"):
        rank_correlation([1, 2, 3], [1, 2, 3], "pearson")


def test_correlation_table():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = correlation_table(_frame(), "base", ["ifd", "reward"], "performance")
    assert t["base"].to_list() == ["A", "B", "C", "average"]
    assert t.columns == ["base", "n",
                         "ifd_spearman", "ifd_spearman_p", "ifd_kendall", "ifd_kendall_p",
                         "reward_spearman", "reward_spearman_p", "reward_kendall", "reward_kendall_p"]
    a, b, c, avg = t.rows(named=True)
    assert a["ifd_spearman"] == pytest.approx(RHO_A) and a["ifd_kendall"] == pytest.approx(TAU_A)
    assert a["n"] == 5 and b["n"] == 3 and avg["n"] == 3
    assert b["ifd_spearman"] == pytest.approx(-1.0) and b["reward_kendall"] == pytest.approx(-1.0)
    assert math.isnan(c["ifd_spearman"]) and math.isnan(c["ifd_kendall_p"])
    # average = mean over groups where defined (C skipped): (8/sqrt(95) - 1) / 2
    assert avg["ifd_spearman"] == pytest.approx((RHO_A - 1.0) / 2)
    assert avg["ifd_kendall"] == pytest.approx((TAU_A - 1.0) / 2)
    assert math.isnan(avg["ifd_spearman_p"])
    # reward vs performance in A: x ranks [2,1,4,3,5] vs y ranks [1,2,3.5,5,3.5]
    # centred: [-1,-2,1,0,2]·[-2,-1,.5,2,.5] = 2 + 2 + .5 + 0 + 1 = 5.5 → ρ = 5.5 / sqrt(10 · 9.5)
    assert a["reward_spearman"] == pytest.approx(5.5 / math.sqrt(95))


def test_correlation_table_errors():
    with pytest.raises(ValueError, match="missing column"):
        correlation_table(_frame(), "base", ["nope"], "performance")
    with pytest.raises(ValueError, match="method"):
        correlation_table(_frame(), "base", ["ifd"], "performance", methods=("pearson",))


# --------------------------------------------------------------------------- the teacher study's tables, on files

METRIC = {"tf_ifeval": "prompt_level_loose_acc,none", "tf_arith": "exact_match,flexible-extract"}


def _eval_table(path: Path, generator: str, values: dict[int, tuple[float, float]], selected: int | None = None):
    """A tidy evaluate_checkpoints table of one run: steps -> (ifeval, arith) scores; the last step is final."""
    rows = []
    for step, (ifeval, arith) in values.items():
        for task, value in (("tf_ifeval", ifeval), ("tf_arith", arith)):
            row = {"model": "b", "dataset": "d", "generator": generator, "selection": "full", "base": "b",
                   "checkpoint": f"checkpoint-{step}", "step": step, "examples_seen": 4 * step,
                   "is_final": step == max(values), "task": task, "metric": METRIC[task], "value": value}
            if selected is not None:
                row["selected"] = step == selected
            rows.append(row)
    write_parquet(pl.DataFrame(rows), path)
    return str(path)


def test_build_teacher_performance_and_correlations(tmp_path):
    evals = [_eval_table(tmp_path / "g1.parquet", "g1", {2: (0.1, 0.2), 4: (0.5, 0.3)}),
             _eval_table(tmp_path / "g2.parquet", "g2", {2: (0.4, 0.4), 4: (0.2, 0.0)})]
    winrates, runs = [], []
    for g, wr, lc in (("g1", 0.6, 0.7), ("g2", 0.2, 0.1)):
        write_json({"win_rate": wr, "lc_win_rate_minimal_inhouse": lc}, tmp_path / f"{g}.json")
        winrates.append(str(tmp_path / f"{g}.json"))
        runs.append({"base": "b", "generator": g, "benchmark": "heldout", "headline": "lc_win_rate_minimal_inhouse"})
    perf = build_teacher_performance(evals=evals, winrates=winrates, table=tmp_path / "perf.csv",
                                     winrate_runs=runs, performance=defaults("performance", include_winrate=True))
    assert perf.columns == ["base", "generator", "step", "tf_ifeval/prompt_level_loose_acc,none",
                            "tf_arith/exact_match,flexible-extract", "heldout/winrate",
                            "heldout/winrate_lc_minimal_inhouse", "performance", "performance_stderr",
                            "mixed", "margin_vs_best_single", "margin_low", "margin_high", "beats_every_single"]
    assert not any("alpaca" in c or c == "winrate_lc" for c in perf.columns)  # the in-house fit is named for what it is
    g1, g2 = perf.rows(named=True)
    assert g1["step"] == 4 and g1["heldout/winrate"] == 0.6
    assert g1["performance"] == pytest.approx((0.5 + 0.3 + 0.7) / 3)  # final checkpoint + LC win rate
    plain = build_teacher_performance(evals=evals, winrates=winrates, table=tmp_path / "plain.csv",
                                      winrate_runs=runs, performance=defaults("performance"))
    assert plain["performance"][1] == pytest.approx(0.1)  # (0.2 + 0.0) / 2: the win rate is only shown
    raw_runs = [{**r, "headline": "win_rate"} for r in runs]  # length_controlled: none
    raw = build_teacher_performance(evals=evals, winrates=winrates, table=tmp_path / "raw.csv",
                                    winrate_runs=raw_runs, performance=defaults("performance", include_winrate=True))
    assert raw["performance"][1] == pytest.approx((0.2 + 0.0 + 0.2) / 3)

    # the IFS-selected checkpoint (eval.checkpoints: final_and_selected adds the 'selected' column)
    sel = [_eval_table(tmp_path / "s1.parquet", "g1", {2: (0.1, 0.2), 4: (0.5, 0.3)}, selected=2)]
    picked = build_teacher_performance(evals=sel, winrates=[], table=tmp_path / "sel.csv", winrate_runs=[],
                                       performance=defaults("performance", checkpoint="selected"))
    assert picked["step"][0] == 2 and picked["performance"][0] == pytest.approx(0.15)
    with pytest.raises(DataError, match="final_and_selected"):
        build_teacher_performance(evals=evals, winrates=[], table=tmp_path / "x.csv", winrate_runs=[],
                                  performance=defaults("performance", checkpoint="selected"))
    with pytest.raises(DataError, match=r"g1\.parquet: no score for performance.metrics.mmlu"):
        build_teacher_performance(evals=evals, winrates=[], table=tmp_path / "x.csv", winrate_runs=[],
                                  performance=defaults("performance", metrics={"mmlu": "acc,none"}))
    with pytest.raises(ValueError, match="2 winrates files but 1 entries in params winrate_runs"):
        build_teacher_performance(evals=evals, winrates=winrates, table=tmp_path / "x.csv", winrate_runs=runs[:1],
                                  performance=defaults("performance"))
    with pytest.raises(DataError, match=r"g1\.json: benchmark 'heldout' has no 'lc_win_rate_alpaca_eval'"):
        build_teacher_performance(evals=evals, winrates=winrates, table=tmp_path / "x.csv",
                                  winrate_runs=[{**r, "headline": "lc_win_rate_alpaca_eval"} for r in runs],
                                  performance=defaults("performance", include_winrate=True))
    assert not (tmp_path / "x.csv").exists()

    pl.DataFrame({"generator": ["g1", "g2"], "base": ["b", "b"], "car": [2.0, 1.0],
                  "reward": [1.0, 3.0]}).write_csv(tmp_path / "metrics.csv")
    corr = correlate_teacher_metrics(data_metrics=tmp_path / "metrics.csv", performance=tmp_path / "perf.csv",
                                     table=tmp_path / "corr.csv", metrics=["car", "reward"])
    joined = pl.DataFrame({"base": ["b", "b"], "car": [2.0, 1.0], "reward": [1.0, 3.0],
                           "performance": [g1["performance"], g2["performance"]]})
    assert corr.equals(correlation_table(joined, "base", ["car", "reward"], "performance"))
    assert corr["base"].to_list() == ["b", "average"] and corr["n"][0] == 2
    assert pl.read_csv(tmp_path / "corr.csv").columns == corr.columns


def test_teacher_performance_as_the_car_paper_measures_it(tmp_path):
    """paper.yaml: performance = mean(AlpacaEval 2 LC, Arena-Hard win rate); no lm-eval score counts
    (performance.teacher_metrics {}), though the lm-eval columns are shown and other studies keep
    performance.metrics."""
    evals = [_eval_table(tmp_path / "g1.parquet", "g1", {4: (0.9, 0.9)})]
    ae = {"win_rate": 0.30, "lc_win_rate_minimal_inhouse": 0.33, "lc_win_rate_alpaca_eval": 0.25}
    ah = {"win_rate": 0.12, "ci_low": 0.1, "ci_high": 0.14}
    write_json(ae, tmp_path / "ae.json")
    write_json(ah, tmp_path / "ah.json")
    runs = [{"base": "b", "generator": "g1", "benchmark": "alpaca_eval2", "headline": "lc_win_rate_alpaca_eval"},
            {"base": "b", "generator": "g1", "benchmark": "arena_hard", "headline": "win_rate"}]
    perf = build_teacher_performance(evals=evals, winrates=[str(tmp_path / "ae.json"), str(tmp_path / "ah.json")],
                                     table=tmp_path / "perf.csv", winrate_runs=runs,
                                     performance=defaults("performance", teacher_metrics={}, include_winrate=True))
    row = perf.row(0, named=True)
    assert row["performance"] == pytest.approx((0.25 + 0.12) / 2)
    assert row["alpaca_eval2/winrate_lc_alpaca_eval"] == 0.25 and row["alpaca_eval2/winrate_lc_minimal_inhouse"] == 0.33
    assert row["arena_hard/winrate"] == 0.12 and "arena_hard/winrate_lc_minimal_inhouse" not in perf.columns
    assert row["tf_ifeval/prompt_level_loose_acc,none"] == 0.9  # shown, not counted
    # teacher_metrics null falls back to performance.metrics (the default run)
    both = build_teacher_performance(evals=evals, winrates=[str(tmp_path / "ae.json"), str(tmp_path / "ah.json")],
                                     table=tmp_path / "both.csv", winrate_runs=runs,
                                     performance=defaults("performance", include_winrate=True))
    assert both["performance"][0] == pytest.approx((0.9 + 0.9 + 0.25 + 0.12) / 4)
