"""The Snakemake DAG: dry runs of every config, lint, config errors before any job,
and a real end-to-end run of the tiny-model config."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest
from workflow_utils import ROOT, copy_workflow, dry_run, snakemake


@pytest.fixture(scope="module")
def wf(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("wf"))


def test_dry_run_default_config(wf):
    jobs = dry_run(wf)
    assert jobs["materialize_model"] == 3
    assert jobs["train_sft"] >= 4
    assert jobs["evaluate_model"] >= 1
    assert jobs["build_teacher_performance"] == 1
    assert jobs["build_evolver_tables"] == 1
    assert jobs["build_ifs_tables"] == 1


def test_dry_run_paper_config(wf):
    jobs = dry_run(wf, "--configfile", "config/paper.yaml")
    assert jobs["train_sft"] >= 100  # 20 generators x 5 bases + evolver runs
    assert jobs["download_seedset"] == 4
    assert sum(jobs.values()) > 1000


def test_lint_is_clean(wf):
    proc = snakemake(wf, "--lint", check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]


@pytest.mark.parametrize(
    ("overlay", "message"),
    [
        ("models: {smollm2: {source: ftp}}", "config.models.smollm2.source: 'ftp' is not allowed; allowed values:"),
        ("teacher: {generators: []}", "config.teacher.generators: must not be empty"),
        ("sft: {learning_rat: 0.1}", "config.sft: unknown key(s) ['learning_rat']"),
        ("generators: {smol_greedy: {model: nobody}}", "generators.smol_greedy.model: unknown model 'nobody'"),
    ],
)
def test_bad_config_fails_before_any_job(wf, tmp_path, overlay, message):
    bad = tmp_path / "bad.yaml"
    bad.write_text(overlay + "\n")
    proc = snakemake(wf, "-n", "--configfile", str(bad), check=False)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (wf / "results").exists() or not any((wf / "results").rglob("*.parquet"))


@pytest.mark.slow
def test_tiny_end_to_end(tiny_run):
    res = tiny_run / "results"
    perf = pl.read_csv(res / "tables" / "teacher_performance.csv")
    assert perf.height == 3  # 3 generators x 1 base
    assert all(math.isfinite(v) for v in perf["performance"].to_list())
    corr = pl.read_csv(res / "tables" / "teacher_metric_correlations.csv")
    assert corr["base"].to_list()[-1] == "average"
    assert "car_spearman" in corr.columns and "car_kendall_p" in corr.columns
    metrics = pl.read_csv(res / "tables" / "teacher_data_metrics.csv")
    assert all(math.isfinite(v) for v in metrics["car"].to_list())
    # lm-eval: the base model and every checkpoint of a run
    base_eval = pl.read_parquet(res / "eval" / "models" / "tiny_base.parquet")
    assert set(base_eval["task"]) == {"tf_ifeval", "tf_arith"}
    run_eval = pl.read_parquet(res / "eval" / "tiny" / "t_greedy" / "full" / "tiny_base.parquet")
    assert sorted(set(run_eval["step"])) == [2, 4]
    assert (res / "eval" / "tiny" / "t_greedy" / "full" / "tiny_base" / "checkpoint-4.json").exists()
    for fig in ("performance_heatmap.png", "best_generator.png", "scatter_car.png"):
        assert (res / "figures" / "teacher" / fig).stat().st_size > 1000
    # every rule left a log and a benchmark
    assert any((res / "logs" / "train_sft").rglob("*.log"))
    assert any((res / "benchmarks" / "train_sft").rglob("*.tsv"))


@pytest.mark.slow
def test_second_run_has_nothing_to_do(tiny_run):
    proc = snakemake(tiny_run, "-n", "--configfile", "tests/configs/tiny.yaml")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_readme_test_command_is_ci_command():
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()


def test_snakefmt_clean():
    import shutil
    import subprocess

    exe = shutil.which("snakefmt") or str(Path(__import__("sys").executable).parent / "snakefmt")
    proc = subprocess.run([exe, "--check", "Snakefile", "rules"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_report_builds(tiny_run, tmp_path):
    out = tmp_path / "report.html"
    snakemake(tiny_run, "--configfile", "tests/configs/tiny.yaml", "--report", str(out))
    text = out.read_text(errors="replace")
    assert out.stat().st_size > 10_000
    assert "Teacher study" in text


@pytest.fixture(scope="module")
def tiny_studies_run(tiny_run, tmp_path_factory) -> Path:
    """The tiny run extended by the evolver and IFS studies (tests/configs/tiny_studies.yaml),
    in a copy of the shared tiny run, so the teacher study's jobs are reused."""
    import shutil

    wf = tmp_path_factory.mktemp("studies") / "wf"
    shutil.copytree(tiny_run, wf, symlinks=True)
    snakemake(wf, "--configfile", "tests/configs/tiny.yaml", "tests/configs/tiny_studies.yaml", timeout=3000)
    return wf


@pytest.mark.slow
def test_tiny_evolver_and_ifs_studies_end_to_end(tiny_studies_run):
    res = tiny_studies_run / "results"
    stats = pl.read_csv(res / "tables" / "evolved_instruction_stats.csv")
    assert stats.height > 0
    for name in ("evolver_comparison.csv", "selection_comparison.csv", "evolver_top1_stats.csv",
                 "ifs_models.csv", "ifs_checkpoints.csv", "early_stopping.csv", "tone_classifier.csv"):
        assert pl.read_csv(res / "tables" / name).height > 0, name
    ifs = pl.read_csv(res / "tables" / "ifs_models.csv")
    assert set(ifs["model"]) == {"tiny_base", "tiny_inst"}
    assert all(0.0 <= v <= 1.0 for v in ifs["ifs"].to_list())
    for fig in ("top1_probability.png", "difficulty_per_round.png", "selection_comparison.png"):
        assert (res / "figures" / "evolver" / fig).stat().st_size > 1000
    assert any((res / "figures" / "ifs").rglob("*.png"))
    again = snakemake(tiny_studies_run, "-n", "--configfile", "tests/configs/tiny.yaml",
                      "tests/configs/tiny_studies.yaml")
    assert "Nothing to be done" in again.stdout + again.stderr
