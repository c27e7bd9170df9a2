"""Win-rate benchmarks and the eval backend in the configs: what config/paper.yaml measures (the
CAR paper's AlpacaEval 2 LC + Arena-Hard, judged per student), what the default run keeps (its
CPU stand-in), and the errors a bad benchmark gets before any job runs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml
from wiring_utils import ROOT, dag_jobs

from teachfit.schema import ConfigError, load_yaml

from teachfit.workflow.config import validate_config


@pytest.fixture()
def base_config(repo_root):
    with open(repo_root / "config" / "config.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.fixture()
def paper_config(repo_root, base_config):
    from snakemake.utils import update_config

    update_config(base_config, load_yaml(repo_root / "config" / "paper.yaml"))
    return validate_config(base_config)


def test_paper_measures_alpaca_eval2_lc_and_arena_hard(paper_config):
    w = paper_config["teacher"]["winrate"]
    active = {k: v for k, v in w["benchmarks"].items() if v["activate"]}
    assert w["activate"] and set(active) == {"alpaca_eval2", "arena_hard"}
    ae, ah = active["alpaca_eval2"], active["arena_hard"]
    assert ae["protocol"] == "alpaca_eval2" and ae["length_controlled"] == "alpaca_eval"
    assert ae["alpaca_eval_glm"] == "length_controlled_v1"
    assert ae["instructions"]["hub"] == {"repo": "tatsu-lab/alpaca_eval", "repo_type": "dataset", "revision": "main",
                                         "file": "alpaca_eval_gpt4_baseline.json", "format": "alpaca_eval"}
    assert ae["reference"]["hub"]["file"] == "alpaca_eval_gpt4_baseline.json"
    assert ah["protocol"] == "arena_hard" and ah["length_controlled"] == "none"
    assert ah["instructions"]["hub"]["file"] == "data/arena-hard-v0.1/question.jsonl"
    assert ah["reference"]["hub"]["file"] == "data/arena-hard-v0.1/model_answer/gpt-4-0314.jsonl"
    judge = paper_config["models"][ae["judge"]]
    assert ae["judge"] == ah["judge"] and judge["source"] == "api" and judge["api_model"] == "gpt-4-1106-preview"
    local = paper_config["models"]["judge_local"]  # the alternative: a local judge behind vLLM's server
    assert local["source"] == "api" and local["api_base"] == "http://localhost:8000/v1"
    perf = paper_config["performance"]
    assert perf["teacher_metrics"] == {} and perf["include_winrate"] is True
    assert perf["metrics"]  # the evolver and IFS studies keep their lm-eval average
    assert paper_config["eval"]["backend"] == "vllm"


def test_default_run_keeps_its_cpu_stand_in(base_config):
    cfg = validate_config(copy.deepcopy(base_config))
    heldout = cfg["teacher"]["winrate"]["benchmarks"]["heldout"]
    assert heldout["protocol"] == "pairwise_ab" and heldout["length_controlled"] == "inhouse_minimal"
    assert heldout["instructions"] == {"seedset": "heldout"} and heldout["reference"] == {"generator": "smol_greedy"}
    assert heldout["judge"] == "smollm2" and heldout["max_new_tokens"] == 64
    assert cfg["performance"]["teacher_metrics"] is None and cfg["eval"]["backend"] == "hf"


@pytest.mark.parametrize(("change", "message"), [
    ({"protocol": "arena_hard"}, "benchmarks.heldout.length_controlled: protocol arena_hard reports the raw win rate"),
    ({"length_controlled": "alpaca_eval"}, "'alpaca_eval' needs protocol alpaca_eval2"),
    ({"protocol": "alpaca_eval2", "length_controlled": "alpaca_eval"},
     "'alpaca_eval' needs AlpacaEval's instructions"),
    ({"instructions": {"generator": "smol_greedy"}}, "a generator gives reference outputs, not instructions"),
    ({"reference": {"seedset": "heldout"}}, "a seed set has no outputs"),
    ({"instructions": {"seedset": "nope"}}, "instructions.seedset: unknown seed set 'nope'"),
    ({"reference": {"generator": "nope"}}, "reference.generator: unknown generator 'nope'"),
    ({"judge": "gpt5"}, "teacher.winrate.benchmarks.heldout.judge: unknown model 'gpt5'"),
    ({"judge_prompt": "prompts/ae.yaml"}, "judge_prompt: applies to alpaca_eval2 and arena_hard only"),
    ({"instructions": {"hub": {"repo": "r", "file": "f.jsonl", "format": "arena_hard_answers"}},
      "reference": {"hub": {"repo": "r", "file": "a.jsonl", "format": "arena_hard_answers"}}},
     "instructions.hub.format: 'arena_hard_answers' does not hold instructions"),
    ({"instructions": {"hub": {"repo": "r", "file": "q.jsonl", "format": "arena_hard_questions"}}},
     "a generator answers seed-set instructions; hub instructions need hub reference outputs"),
    ({"instructions": {"seedset": "heldout", "hub": {"repo": "r", "file": "q", "format": "alpaca_eval"}}},
     "set exactly one of ['seedset', 'generator', 'hub']"),
    ({"length_controlled": "yes"}, "length_controlled: 'yes' is not allowed"),
])
def test_bad_benchmarks_name_the_field(base_config, change, message):
    bench = base_config["teacher"]["winrate"]["benchmarks"]["heldout"]
    for key, value in change.items():
        bench[key] = value
    with pytest.raises(ConfigError) as err:
        validate_config(base_config)
    assert message in str(err.value)


def test_winrate_on_without_an_active_benchmark(base_config):
    base_config["teacher"]["winrate"]["benchmarks"]["heldout"]["activate"] = False
    with pytest.raises(ConfigError, match="no benchmark is active"):
        validate_config(base_config)


def test_eval_backend_is_checked(base_config):
    base_config["eval"]["backend"] = "sglang"
    with pytest.raises(ConfigError, match=r"config\.eval\.backend: 'sglang' is not allowed; allowed values: 'hf', 'vllm'"):
        validate_config(base_config)


@pytest.fixture(scope="module")
def paper_jobs() -> list[dict]:
    return dag_jobs(ROOT, "config/paper.yaml")


def test_paper_dag_judges_every_student_on_both_benchmarks(paper_jobs, paper_config):
    """`snakemake -n --configfile config/paper.yaml`: one AlpacaEval 2 and one Arena-Hard judging job
    per student (20 generators x 5 bases), AlpacaEval's LC for each AlpacaEval 2 judgment, the hub
    downloads, and the teacher table reads exactly those summaries."""
    t = paper_config["teacher"]
    students = {(g, b) for g in t["generators"] for b in t["bases"]}
    assert len(students) == 100
    judged: dict[str, set] = {"alpaca_eval2": set(), "arena_hard": set()}
    pattern = re.compile(r"results/winrate/(\w+)/magpie_air/(\w+)/full/(\w+)\.answers\.parquet")
    for job in paper_jobs:
        if job["rule"] == "judge_winrate":
            bench, g, b = next(m.groups() for f in job["input"] if (m := pattern.fullmatch(f)))
            judged[bench].add((g, b))
            assert "results/models/gpt4_turbo_judge" in job["input"]
            assert int(job["resources"].get("gpu", 0)) == 0  # an API judge needs no GPU
    assert judged == {"alpaca_eval2": students, "arena_hard": students}
    by_rule: dict[str, list[dict]] = {}
    for job in paper_jobs:
        by_rule.setdefault(job["rule"], []).append(job)
    assert len(by_rule["alpaca_eval_lc"]) == 100 and len(by_rule["answer_winrate"]) == 200
    downloads = sorted(f for j in by_rule["judge_winrate"] for f in j["input"] if "winrate_data" in f)
    assert set(downloads) == {"results/winrate_data/alpaca_eval2/reference.parquet",
                              "results/winrate_data/arena_hard/reference.parquet"}
    assert len(by_rule["download_winrate_data"]) == 4
    perf = by_rule["build_teacher_performance"][0]["input"]
    winrates = [f for f in perf if f.startswith("results/winrate/")]
    assert len(winrates) == 200
    assert sum(f.endswith(".alpaca_eval.json") and "/alpaca_eval2/" in f for f in winrates) == 100
    assert sum(f.endswith(".json") and "/arena_hard/" in f for f in winrates) == 100
    assert not any("/heldout/" in f for j in paper_jobs for f in j["input"])  # the CPU stand-in is off
    assert all(Path(j["conda"]).name == "eval_vllm.yaml" for j in by_rule["evaluate_checkpoints"])
