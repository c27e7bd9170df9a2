"""Exact partial re-runs: after a completed tiny run, a config change re-plans exactly the
jobs whose params (or inputs) it touches, and nothing else.

Each case dry-runs ``snakemake -n --configfile tests/configs/tiny.yaml <overlay>`` on the
shared completed run (session fixture ``tiny_run``; never mutated here) and pins the
planned jobs rule by rule, with their wildcards. The rerun triggers come from the
workflow profile ``profiles/default/config.yaml`` (mtime, params, input, software-env, code).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from workflow_utils import planned_jobs, snakemake

pytestmark = pytest.mark.slow

TINY = "tests/configs/tiny.yaml"
GENERATORS = ("t_greedy", "t_best2", "t_fewshot")
TEACHER_TABLES = {"compute_car": 1, "correlate_teacher_metrics": 1, "plot_teacher_figures": 1, "rank_teachers": 1,
                  "all": 1}

_JOB = re.compile(r"^(?:local)?rule (\w+):$")


def planned(output: str) -> list[dict[str, str]]:
    """Every job block of a dry run: rule, wildcards (dict) and reason."""
    jobs: list[dict] = []
    for line in output.splitlines():
        if m := _JOB.match(line.strip()):
            jobs.append({"rule": m.group(1), "wildcards": {}, "reason": ""})
        elif jobs and line.strip().startswith("wildcards:"):
            pairs = line.split(":", 1)[1].split(",")
            jobs[-1]["wildcards"] = dict(p.strip().split("=", 1) for p in pairs)
        elif jobs and line.strip().startswith("reason:"):
            jobs[-1]["reason"] = line.split(":", 1)[1].strip()
    return jobs


def dry(wf: Path, tmp_path: Path, overlay: str | None) -> tuple[dict[str, int], list[dict]]:
    args = ["-n", "--configfile", TINY]
    if overlay is not None:
        path = tmp_path / "overlay.yaml"
        path.write_text(overlay)
        args.append(str(path))
    proc = snakemake(wf, *args, timeout=300)
    out = proc.stdout + "\n" + proc.stderr
    jobs = planned(out)
    counts = planned_jobs(out)
    assert counts == {r: sum(j["rule"] == r for j in jobs) for r in counts}, "job blocks and stats disagree"
    return counts, jobs


def reasons(jobs: list[dict], rule: str) -> set[str]:
    return {j["reason"] for j in jobs if j["rule"] == rule}


def params_changed(jobs: list[dict], rule: str, now: str) -> bool:
    """Every job of ``rule`` was planned because its params changed, to a value showing ``now``."""
    found = reasons(jobs, rule)
    return bool(found) and all(
        r.startswith("Params have changed since last execution") and now in r.split(" now: ")[-1]
        for r in found)


def test_unchanged_config_plans_nothing(tiny_run, tmp_path):
    proc = snakemake(tiny_run, "-n", "--configfile", TINY, timeout=300)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    assert planned_jobs(proc.stdout + proc.stderr) == {}


@pytest.mark.parametrize(("overlay", "now"), [
    ("teacher: {car: {beta: 2.0}}\n", "'beta': 2.0"),
    ("teacher: {car: {reward_offset: 1.5}}\n", "'reward_offset': 1.5"),
])
def test_car_settings_rerun_car_and_later_only(tiny_run, tmp_path, overlay, now):
    counts, jobs = dry(tiny_run, tmp_path, overlay)
    assert counts == TEACHER_TABLES
    assert params_changed(jobs, "compute_car", now)
    assert reasons(jobs, "correlate_teacher_metrics") == {
        "Input files updated by another job: results/tables/teacher_data_metrics.csv"}


def test_new_generator_runs_only_its_own_jobs(tiny_run, tmp_path):
    overlay = (
        "generators:\n"
        "  t_new: {model: tiny_inst, temperature: 0.7, max_new_tokens: 12}\n"
        f"teacher:\n  generators: [{', '.join(GENERATORS)}, t_new]\n"
    )
    counts, jobs = dry(tiny_run, tmp_path, overlay)
    per_generator = {
        "generate_responses": 1, "score_rewards": 1, "select_responses": 1,
        # scorers: the base tiny_base and the reference model tiny_inst, each under CAR's
        # convention (chat) and the IFD convention (cherry)
        "score_losses": 4,
        "select_trainset": 1, "train_sft": 1, "evaluate_checkpoints": 1,
        "answer_winrate": 1, "judge_winrate": 1,  # win rate of its student vs the reference generator
    }
    tables = {"compute_data_metrics": 1, "build_teacher_performance": 1, "summarize_evals": 1,
              **TEACHER_TABLES}
    assert counts == {**per_generator, **tables}
    for job in jobs:
        if job["rule"] in per_generator:
            assert job["wildcards"]["generator"] == "t_new", job
            assert job["wildcards"]["dataset"] == "tiny"
    scorers = sorted((j["wildcards"]["scorer"], j["wildcards"]["convention"]) for j in jobs
                     if j["rule"] == "score_losses")
    assert scorers == [("tiny_base", "chat"), ("tiny_base", "cherry"), ("tiny_inst", "chat"),
                       ("tiny_inst", "cherry")]
    assert reasons(jobs, "generate_responses") == {
        "Missing output files: results/generations/tiny/t_new.parquet"}


def test_learning_rate_reruns_training_not_generation(tiny_run, tmp_path):
    counts, jobs = dry(tiny_run, tmp_path, "sft: {learning_rate: 0.001}\n")
    assert counts == {
        "train_sft": 3, "evaluate_checkpoints": 3, "answer_winrate": 3, "judge_winrate": 3,
        "build_teacher_performance": 1, "summarize_evals": 1,
        "correlate_teacher_metrics": 1, "plot_teacher_figures": 1, "rank_teachers": 1, "all": 1,
    }
    assert sorted(j["wildcards"]["generator"] for j in jobs if j["rule"] == "train_sft") == sorted(GENERATORS)
    assert params_changed(jobs, "train_sft", "'learning_rate': 0.001")
    assert not {"generate_responses", "score_rewards", "score_losses", "select_trainset",
                "compute_data_metrics", "compute_car"} & set(counts)


def test_figure_dpi_reruns_plots_only(tiny_run, tmp_path):
    counts, jobs = dry(tiny_run, tmp_path, "analysis: {figures: {dpi: 72}}\n")
    assert counts == {"plot_teacher_figures": 1, "rank_teachers": 1, "all": 1}
    assert params_changed(jobs, "plot_teacher_figures", "'dpi': 72")
    assert params_changed(jobs, "rank_teachers", "'dpi': 72")
