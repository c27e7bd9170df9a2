"""Wiring a cluster can trust, checked on the parsed DAG of the paper-scale config with the
SLURM profile (config/paper.yaml + profiles/slurm):

* every job that loads a model (a non-API model folder among its inputs) requests a GPU;
* every rule's conda env installs the distributions that its function's imports need
  (derived from the code by tests/wiring_utils.py, not from a hand-kept list);
* every rule's named input/output/params keys are exactly its function's parameters.

The negative controls rebuild the wiring that an earlier version shipped (AutoIF under the
analysis env, no GPU) and assert that the same checks reject it.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from wiring_utils import (
    ROOT,
    apply_profile,
    dag_jobs,
    distributions,
    env_distributions,
    import_closure,
    script_functions,
)

from teachfit.schema import load_yaml

PAPER = ("config/paper.yaml",)


@pytest.fixture(scope="module")
def paper_jobs() -> list[dict]:
    return apply_profile(dag_jobs(ROOT, *PAPER), ROOT / "profiles" / "slurm" / "config.yaml")


@pytest.fixture(scope="module")
def tiny_studies_jobs() -> list[dict]:
    """The tiny config with every study on: rules that paper.yaml does not run (win rates)."""
    return dag_jobs(ROOT, "tests/configs/tiny.yaml", "tests/configs/tiny_studies.yaml")


@pytest.fixture(scope="module")
def mixed_jobs() -> list[dict]:
    """The tiny config with a per_instruction (mixed) teacher (issue 25): rule mix_responses."""
    return dag_jobs(ROOT, "tests/configs/tiny.yaml", "tests/configs/tiny_mixed.yaml")


@pytest.fixture(scope="module")
def recommend_jobs() -> list[dict]:
    """The tiny config with the recommendation rules (issue 14): a dataset generator, rank_teachers
    without the full study, select_data on a user file."""
    return dag_jobs(ROOT, "tests/configs/tiny.yaml", "tests/configs/tiny_recommend.yaml")


@pytest.fixture(scope="module")
def models() -> dict:
    cfg = load_yaml(ROOT / "config" / "config.yaml")
    cfg["models"].update(load_yaml(ROOT / "config" / "paper.yaml")["models"])
    return cfg["models"]


def loaded_models(job: dict, models: dict) -> list[str]:
    """Aliases of the non-API model folders a job reads."""
    out = []
    for path in job["input"]:
        parts = Path(path).parts
        if len(parts) >= 3 and parts[:2] == ("results", "models") and parts[2] in models:
            if models[parts[2]].get("source") != "api":
                out.append(parts[2])
    return out


def gpu_violations(jobs: list[dict], models: dict) -> dict[str, list[str]]:
    bad: dict[str, list[str]] = {}
    for job in jobs:
        used = loaded_models(job, models)
        if used and int(job["resources"].get("gpu", 0) or 0) < 1:
            bad.setdefault(job["rule"], used)
    return bad


def missing_in_env(script: Path, env_file: Path) -> set[str]:
    """Distributions the script's package functions import that the env does not install."""
    needed = {"teachfit"}
    for module, name in script_functions(script):
        needed |= distributions(import_closure(module, name))
    return needed - env_distributions(env_file)


def rules_of(jobs: list[dict]) -> dict[str, dict]:
    return {j["rule"]: j for j in jobs if j["script"]}


def test_model_loading_jobs_request_a_gpu(paper_jobs, models):
    assert paper_jobs, "empty DAG"
    assert gpu_violations(paper_jobs, models) == {}


def test_rule_envs_install_what_their_functions_import(paper_jobs):
    problems = {}
    for rule, job in sorted(rules_of(paper_jobs).items()):
        assert job["conda"], f"rule {rule} has no conda env"
        missing = missing_in_env(Path(job["script"]), Path(job["conda"]))
        if missing:
            problems[rule] = (Path(job["conda"]).name, sorted(missing))
    assert problems == {}


def test_recommend_rules_request_a_gpu_and_have_their_imports(recommend_jobs):
    """The recommendation DAG (not in paper.yaml): the same two checks, with the tiny models."""
    tiny_models = load_yaml(ROOT / "tests" / "configs" / "tiny.yaml")["models"]
    assert {"import_responses", "rank_teachers", "prepare_select_data", "score_select_data",
            "select_data"} <= {j["rule"] for j in recommend_jobs}
    assert gpu_violations(recommend_jobs, tiny_models) == {}
    problems = {rule: sorted(missing_in_env(Path(job["script"]), Path(job["conda"])))
                for rule, job in sorted(rules_of(recommend_jobs).items())
                if missing_in_env(Path(job["script"]), Path(job["conda"]))}
    assert problems == {}


def test_mixed_teacher_rule_has_its_imports(mixed_jobs):
    assert "mix_responses" in {j["rule"] for j in mixed_jobs}
    job = rules_of(mixed_jobs)["mix_responses"]
    assert not missing_in_env(Path(job["script"]), Path(job["conda"]))


def test_rule_keys_are_their_function_parameters(paper_jobs, tiny_studies_jobs, recommend_jobs, mixed_jobs):
    """Each script calls one package function through teachfit.workflow.adapter.run; every job's named
    input/output/params keys must bind to that function's signature (checked without running it)."""
    from teachfit.workflow.adapter import bind

    jobs = {j["rule"]: j for j in [*paper_jobs, *tiny_studies_jobs, *recommend_jobs, *mixed_jobs] if j["script"]}
    problems = []
    for script in sorted((ROOT / "scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "run"]
        if len(calls) != 1:
            problems.append(f"{script.name}: does not call teachfit.workflow.adapter.run exactly once")
            continue
        fn_name = calls[0].args[0].id
        module = next(m for m, n in script_functions(script) if n == fn_name)
        fn = getattr(importlib.import_module(module), fn_name)
        users = [j for j in jobs.values() if Path(j["script"]).name == script.name]
        if not users:
            problems.append(f"{script.name}: no rule of the paper, tiny-studies, recommend or mixed DAG uses it")
        for job in users:
            try:
                bind(fn, dict.fromkeys(job["keys"]), threads=1, rule=job["rule"])
            except TypeError as exc:
                problems.append(str(exc))
    assert problems == []


# --------------------------------------------------------------------------- negative controls


def test_checks_reject_autoif_in_the_analysis_env_without_a_gpu(paper_jobs, models):
    """The wiring an earlier version shipped: AutoIF (which runs the evolver model) under
    envs/analysis.yaml, requesting no GPU. Both checks must flag it."""
    script = ROOT / "scripts" / "evolve_autoif.py"
    missing = missing_in_env(script, ROOT / "envs" / "analysis.yaml")
    assert {"torch", "transformers"} <= missing
    autoif = [j for j in paper_jobs if j["rule"] == "evolve_autoif"]
    assert autoif, "paper.yaml runs AutoIF"
    old = [{**j, "resources": {k: v for k, v in j["resources"].items() if k != "gpu"}} for j in autoif]
    assert set(gpu_violations(old, models)) == {"evolve_autoif"}


def test_import_closure_is_per_function():
    """An analysis function does not inherit the model imports of a sibling in its module."""
    light = distributions(import_closure("teachfit.studies.evolver.sets", "merge_evolved"))
    assert "torch" not in light and "polars" in light
    heavy = distributions(import_closure("teachfit.studies.evolver.evolve", "evolve_instructions"))
    assert {"torch", "transformers"} <= heavy


def test_env_files_are_pinned_pip_requirements():
    """Every env file installs exact pins (its lock, tests/test_envs.py) and the teachfit package."""
    for env in sorted((ROOT / "envs").glob("*.yaml")):
        spec = load_yaml(env)
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
        project = [p for p in pip if p.startswith("-e ")]
        assert project == ["-e ${TEACHFIT_WORKFLOW}"], f"{env.name}: does not install the teachfit package"
        loose = [p for p in pip if p not in project and "==" not in p]
        assert loose == [], f"{env.name}: unpinned requirements {loose}"
