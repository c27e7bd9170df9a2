"""Tests for the IFS study's intervals and early-stopping table: Wilson intervals (against scipy),
the paired bootstrap, early_stopping_row on hand-made runs with lm-eval-style per-sample files,
rule build_ifs_tables and rule plot_ifs_curve on files."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
from scipy.stats import binomtest

from teachfit.schema import defaults
from teachfit.io import write_parquet
from teachfit.studies.ifs.intervals import (
    BOOTSTRAP_RESAMPLES,
    normal_diff_interval,
    paired_bootstrap,
    percentile_interval,
    share_interval,
    wilson_interval,
)
from teachfit.studies.ifs.scores import (
    build_ifs_tables,
    early_stopping_row,
    ifs_curve,
    plot_ifs_curve,
    select_checkpoint,
)

# ----------------------------------------------------------------------------- intervals


@pytest.mark.parametrize(("k", "n"), [(0, 8), (4, 8), (8, 8), (1, 80), (40, 80), (73, 80), (3, 7)])
def test_wilson_matches_scipy(k, n):
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(k, n) == pytest.approx((ref.low, ref.high), abs=1e-9)


def test_wilson_edges_and_errors():
    lo, hi = wilson_interval(0, 8)
    assert lo == 0.0 and hi == pytest.approx(0.3244, abs=1e-4)  # not degenerate at 0 of 8
    assert all(math.isnan(x) for x in wilson_interval(0, 0))
    with pytest.raises(ValueError, match="k <= n"):
        wilson_interval(9, 8)
    assert share_interval([])[3] == 0 and math.isnan(share_interval([])[0])
    s, lo, hi, n = share_interval([1, 0, 1, 1])
    assert (s, n) == (0.75, 4) and (lo, hi) == pytest.approx(wilson_interval(3, 4))


def test_paired_bootstrap_pairs_items_and_reproduces_a_loop():
    a = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    b = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    ones = np.ones(5)
    draws = paired_bootstrap(a, ones, b, ones, 50, np.random.default_rng(3))
    # the same resamples drawn by hand: one index draw per resample, used for both
    idx = np.random.default_rng(3).integers(0, 5, size=(50, 5))
    by_hand = np.array([a[i].mean() - b[i].mean() for i in idx])
    assert draws == pytest.approx(by_hand)
    # identical evaluations: every paired difference is 0 (an unpaired bootstrap would not be)
    assert (paired_bootstrap(a, ones, a, ones, 200, np.random.default_rng(0)) == 0).all()
    # list-valued metrics (sum, count per item): the ratio of sums, as lm-eval flattens them
    d = paired_bootstrap(np.array([2.0, 1.0]), np.array([2.0, 3.0]), np.array([0.0, 0.0]),
                         np.array([2.0, 3.0]), 10, np.random.default_rng(1))
    i = np.random.default_rng(1).integers(0, 2, size=(10, 2))
    assert d == pytest.approx(np.array([2.0, 1.0])[i].sum(1) / np.array([2.0, 3.0])[i].sum(1))
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap(a, ones, b[:3], ones[:3], 5, np.random.default_rng(0))


def test_percentile_and_normal_intervals():
    lo, hi = percentile_interval(np.arange(1001, dtype=float))
    assert (lo, hi) == pytest.approx((25.0, 975.0))
    assert all(math.isnan(x) for x in percentile_interval(np.array([np.nan])))
    lo, hi = normal_diff_interval(0.1, 0.03, 0.04)
    assert (lo, hi) == pytest.approx((0.1 - 1.959964 * 0.05, 0.1 + 1.959964 * 0.05), abs=1e-6)
    assert math.isnan(normal_diff_interval(0.1, None, 0.04)[0])


# ----------------------------------------------------------------------------- one run on files

METRICS = {"tf_ifeval": "prompt_level_loose_acc,none", "tf_arith": "exact_match,flexible-extract"}


def _samples(path, ifeval: list[bool], arith: list[float], inst: list[list[bool]] | None = None) -> None:
    """A per-sample JSONL as evaluate_checkpoints writes it (lm-eval's keys: task, doc_id,
    filter, metrics, <metric name>)."""
    with path.open("w") as fh:
        for i, v in enumerate(ifeval):
            rec = {"task": "tf_ifeval", "doc_id": i, "filter": "none",
                   "metrics": ["prompt_level_loose_acc", "inst_level_loose_acc"], "prompt_level_loose_acc": v,
                   "inst_level_loose_acc": (inst or [[v]] * len(ifeval))[i]}
            fh.write(json.dumps(rec) + "\n")
        for filt in ("strict-match", "flexible-extract"):
            for i, v in enumerate(arith):
                vv = v if filt == "flexible-extract" else 0.0
                fh.write(json.dumps({"task": "tf_arith", "doc_id": i, "filter": filt, "metrics": ["exact_match"],
                                     "exact_match": vv}) + "\n")


def _tidy(rows: list[tuple[int, str, str, float, float | None]]) -> pl.DataFrame:
    return pl.DataFrame([{"step": s, "task": t, "metric": m, "value": v, "stderr": se} for s, t, m, v, se in rows],
                        schema={"step": pl.Int64, "task": pl.String, "metric": pl.String, "value": pl.Float64,
                                "stderr": pl.Float64})


@pytest.fixture
def run_files(tmp_path):
    """One run, checkpoints at steps 10 / 20 / 30: IFS plateaus at step 20 (0.2, 0.9, 0.9 over 80
    prompts); lm-eval evaluated steps 20 (selected) and 30 (final) on 16 items per task."""
    frames = []
    for step, ifs, obj in ((10, 0.2, 2), (20, 0.9, 6), (30, 0.9, 3)):
        k = round(ifs * 80)
        frames.append(pl.DataFrame({
            "id": [f"p{j}" for j in range(80)] + [f"q{j}" for j in range(6)],
            "task": ["ifs"] * 80 + ["objecqa"] * 6,
            "variant": ["full", "partial"] * 40 + [None] * 6,
            "label": [1] * k + [0] * (80 - k) + [None] * 6,
            "judge_label": [None] * 80 + ["objective"] * obj + ["subjective"] * (6 - obj),
            "judge_label_raw": [None] * 80 + ["subjective"] * 6,
        }).with_columns(pl.lit(f"checkpoint-{step}").alias("checkpoint"), pl.lit(step).alias("step"),
                        pl.lit(step * 4).alias("examples_seen")))
    scores = pl.concat(frames)
    write_parquet(scores, tmp_path / "scores.parquet")
    write_parquet(pl.DataFrame({"step": list(range(1, 31)), "loss": [1.0] * 30,
                                "num_tokens": [100.0 * s for s in range(1, 31)]}), tmp_path / "log.parquet")
    meta = {"dataset": "d", "generator": "g", "selection": "full", "base": "b"}
    sel = select_checkpoint(tmp_path / "scores.parquet", tmp_path / "log.parquet", tmp_path / "sel.json",
                            tmp_path / "curve.parquet", defaults("ifs.early_stopping"), meta)
    assert sel["step"] == 20
    ev = tmp_path / "eval"
    ev.mkdir()
    sel_ife = [True] * 10 + [False] * 6
    fin_ife = [True] * 12 + [False] * 4
    sel_ar = [1.0] * 4 + [0.0] * 12
    fin_ar = [1.0] * 3 + [0.0] * 13
    _samples(ev / "checkpoint-20.samples.jsonl", sel_ife, sel_ar)
    _samples(ev / "checkpoint-30.samples.jsonl", fin_ife, fin_ar)
    tidy = _tidy([(20, "tf_ifeval", METRICS["tf_ifeval"], 10 / 16, 0.12), (20, "tf_arith", METRICS["tf_arith"], 4 / 16, 0.11),
                  (30, "tf_ifeval", METRICS["tf_ifeval"], 12 / 16, 0.11), (30, "tf_arith", METRICS["tf_arith"], 3 / 16, 0.10)])
    write_parquet(tidy, tmp_path / "eval.parquet")
    return tmp_path, scores, tidy


def test_early_stopping_row_answers_the_question(run_files):
    d, scores, tidy = run_files
    curve = pl.read_parquet(d / "curve.parquet")
    row = early_stopping_row(curve, tidy, d / "eval", scores, METRICS, seed=0)
    assert list(row)[:20] == [
        "dataset", "generator", "selection", "base", "plateau_found", "selected_step", "final_step",
        "steps_saved", "selected_tokens", "final_tokens", "tokens_saved", "tokens_saved_share",
        "selected_examples", "final_examples", "selected_ifs", "selected_ifs_lo", "selected_ifs_hi",
        "final_ifs", "final_ifs_lo", "final_ifs_hi"]
    assert (row["plateau_found"], row["selected_step"], row["final_step"], row["steps_saved"]) == (True, 20, 30, 10)
    assert (row["selected_tokens"], row["final_tokens"], row["tokens_saved"]) == (2000.0, 3000.0, 1000.0)
    assert row["tokens_saved_share"] == pytest.approx(1 / 3)
    assert (row["selected_examples"], row["final_examples"]) == (80, 120)
    ife, ar = (f"{t}/{m}" for t, m in METRICS.items())
    assert row[f"selected:{ife}"] == pytest.approx(10 / 16) and row[f"final:{ife}"] == pytest.approx(12 / 16)
    assert row[f"diff:{ife}"] == pytest.approx(-2 / 16) and row[f"diff:{ar}"] == pytest.approx(1 / 16)
    assert row["diff:average"] == pytest.approx((-2 / 16 + 1 / 16) / 2)
    assert row["perf_interval"] == "paired_bootstrap"
    # the paired bootstrap over the 16 items, redone here: items 10, 11 differ (+1 for final)
    rng = np.random.default_rng(0)
    a = np.array([1.0] * 10 + [0.0] * 6)
    b = np.array([1.0] * 12 + [0.0] * 4)
    one = np.ones(16)
    d_ife = paired_bootstrap(a, one, b, one, BOOTSTRAP_RESAMPLES, rng)
    assert (row[f"diff_lo:{ife}"], row[f"diff_hi:{ife}"]) == pytest.approx(percentile_interval(d_ife))
    # all differences are one-sided here: paired items can only move towards the final checkpoint
    assert row[f"diff_lo:{ife}"] <= row[f"diff:{ife}"] <= row[f"diff_hi:{ife}"] <= 0.0
    assert row["diff_lo:average"] < row["diff:average"] < row["diff_hi:average"]
    # ObjecQA: 4/6 -> 3/6 objective (calibrated), 0 -> 0 raw
    assert row["selected_objecqa"] == pytest.approx(1.0) and row["final_objecqa"] == pytest.approx(0.5)
    assert row["objecqa_diff"] == pytest.approx(0.5)
    assert row["objecqa_diff_lo"] <= 0.5 <= row["objecqa_diff_hi"]
    assert (row["objecqa_raw_diff"], row["objecqa_raw_diff_lo"], row["objecqa_raw_diff_hi"]) == (0.0, 0.0, 0.0)
    # no NaN anywhere for evaluated checkpoints
    assert not [k for k, v in row.items() if isinstance(v, float) and math.isnan(v)]
    # same seed, same row
    assert early_stopping_row(curve, tidy, d / "eval", scores, METRICS, seed=0) == row


def test_early_stopping_row_fallbacks(run_files):
    d, scores, tidy = run_files
    curve = pl.read_parquet(d / "curve.parquet")
    ife = f"tf_ifeval/{METRICS['tf_ifeval']}"
    # a metric whose per-sample mean does not reproduce lm-eval's value: normal interval from stderrs
    off = tidy.with_columns(pl.when(pl.col("task") == "tf_ifeval").then(pl.col("value") + 0.01)
                            .otherwise(pl.col("value")).alias("value"))
    row = early_stopping_row(curve, off, d / "eval", scores, METRICS, seed=0)
    assert row["perf_interval"] == f"{ife}=normal_stderr; tf_arith/{METRICS['tf_arith']}=paired_bootstrap"
    assert (row[f"diff_lo:{ife}"], row[f"diff_hi:{ife}"]) == pytest.approx(
        normal_diff_interval(-2 / 16, 0.12, 0.11))
    assert not math.isnan(row["diff_lo:average"])
    # a list-valued metric (inst_level) is paired by document too
    inst = {"tf_ifeval": "inst_level_loose_acc,none"}
    _samples(d / "eval" / "checkpoint-20.samples.jsonl", [True] * 16, [0.0] * 16,
             inst=[[True, False]] * 8 + [[True]] * 8)
    _samples(d / "eval" / "checkpoint-30.samples.jsonl", [True] * 16, [0.0] * 16, inst=[[True, True]] * 8 + [[True]] * 8)
    t2 = _tidy([(20, "tf_ifeval", inst["tf_ifeval"], 16 / 24, None), (30, "tf_ifeval", inst["tf_ifeval"], 1.0, None)])
    row = early_stopping_row(curve, t2, d / "eval", scores, inst, seed=0)
    assert row["perf_interval"] == "paired_bootstrap"
    assert row["diff:tf_ifeval/inst_level_loose_acc,none"] == pytest.approx(-8 / 24)
    # the selected checkpoint not evaluated (eval.checkpoints: final): NaN values, said so
    row = early_stopping_row(curve, tidy.filter(pl.col("step") == 30), d / "eval", scores, METRICS, seed=0)
    assert math.isnan(row[f"selected:{ife}"]) and row["perf_interval"] == "not_evaluated"
    # selected = final: zero difference, zero-width intervals
    last = curve.with_columns((pl.col("step") == 30).alias("selected"))
    row = early_stopping_row(last, tidy, d / "eval", scores, METRICS, seed=0)
    assert (row["steps_saved"], row["tokens_saved"], row[f"diff:{ife}"], row["perf_interval"]) == (
        0, 0.0, 0.0, "same_checkpoint")
    assert (row[f"diff_lo:{ife}"], row["diff_hi:average"], row["objecqa_diff_lo"]) == (0.0, 0.0, 0.0)


def test_build_ifs_tables_and_plot_on_files(run_files, tmp_path):
    d, scores, _ = run_files
    model_scores = scores.filter(pl.col("step") == 10).with_columns(pl.lit("m").alias("model"),
                                                                   pl.lit("none").alias("fmt"))
    write_parquet(model_scores, tmp_path / "model.parquet")
    out = tmp_path / "tables"
    build_ifs_tables([str(tmp_path / "model.parquet")], [str(d / "curve.parquet")], [str(d / "scores.parquet")],
                     [str(d / "eval.parquet")], [str(d / "eval")], out / "models.csv", out / "checkpoints.csv",
                     out / "es.csv", defaults("performance"), seed=0)
    models = pl.read_csv(out / "models.csv")
    assert models.columns == ["model", "fmt", "ifs", "ifs_lo", "ifs_hi", "ifs_partial", "ifs_partial_lo",
                              "ifs_partial_hi", "ifs_full", "ifs_full_lo", "ifs_full_hi", "n", "n_partial",
                              "n_full", "objecqa", "objecqa_lo", "objecqa_hi", "objecqa_raw", "objecqa_raw_lo",
                              "objecqa_raw_hi", "n_objecqa"]
    assert models["ifs"][0] == pytest.approx(0.2) and models["objecqa"][0] == pytest.approx(2 / 6)
    assert (models["objecqa_lo"][0], models["objecqa_hi"][0]) == pytest.approx(wilson_interval(2, 6))
    ck = pl.read_csv(out / "checkpoints.csv")
    assert ck.height == 3 and ck["selected"].to_list() == [False, True, False]
    es = pl.read_csv(out / "es.csv")
    assert es.height == 1 and es["selected_step"][0] == 20 and es["final_step"][0] == 30
    row = es.row(0, named=True)
    assert not [k for k, v in row.items() if isinstance(v, float) and math.isnan(v)]
    with pytest.raises(ValueError, match="one of each per run"):
        build_ifs_tables([], [str(d / "curve.parquet")], [], [], [], out / "a.csv", out / "b.csv", out / "c.csv",
                         defaults("performance"), seed=0)
    fig = tmp_path / "fig" / "curve.png"
    plot_ifs_curve(d / "curve.parquet", fig, defaults("analysis.figures"))
    assert fig.exists() and fig.stat().st_size > 1000


def test_band_drawn_per_curve(tmp_path, monkeypatch):
    """plot_ifs_curve draws one shaded 95% band per metric, spanning each point's interval."""
    import matplotlib.axes

    bands = []
    real = matplotlib.axes.Axes.fill_between

    def spy(self, x, y1, y2, **kw):
        bands.append((list(x), list(y1), list(y2)))
        return real(self, x, y1, y2, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", spy)
    scores = pl.DataFrame({
        "id": ["a", "b", "q"] * 2, "task": ["ifs", "ifs", "objecqa"] * 2, "variant": ["full", "partial", None] * 2,
        "label": [1, 0, None, 1, 1, None], "judge_label": [None, None, "objective"] * 2,
        "judge_label_raw": [None, None, "subjective"] * 2, "checkpoint": ["c1"] * 3 + ["c2"] * 3,
        "step": [1] * 3 + [2] * 3, "examples_seen": [4] * 3 + [8] * 3})
    curve, _ = ifs_curve(scores, pl.DataFrame({"step": [1, 2], "num_tokens": [10.0, 20.0]}),
                         defaults("ifs.early_stopping"))
    curve = curve.with_columns(*[pl.lit(v).alias(k) for k, v in
                                 {"dataset": "d", "generator": "g", "selection": "s", "base": "b"}.items()])
    write_parquet(curve, tmp_path / "c.parquet")
    plot_ifs_curve(tmp_path / "c.parquet", tmp_path / "c.png", defaults("analysis.figures"))
    assert len(bands) == 5
    x, y1, y2 = bands[0]  # groups are drawn in name order: "ifs" first (1 of 2, then 2 of 2)
    assert x == [4, 8]
    assert y1 == pytest.approx([wilson_interval(1, 2)[0], wilson_interval(2, 2)[0]])
    assert y2 == pytest.approx([wilson_interval(1, 2)[1], 1.0])
