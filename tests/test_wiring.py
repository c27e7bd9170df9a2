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

from teachfit.config import load_yaml

PAPER = ("config/paper.yaml",)


@pytest.fixture(scope="module")
def paper_jobs() -> list[dict]:
    return apply_profile(dag_jobs(ROOT, *PAPER), ROOT / "profiles" / "slurm" / "config.yaml")


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


def test_rule_keys_are_their_function_parameters():
    """Each script calls one package function through teachfit.workflow.run; the rule's named
    keys must bind to that function's signature (checked without running anything)."""
    from teachfit.workflow import bind

    rules = _rule_keys()
    problems = []
    for script in sorted((ROOT / "scripts").glob("*.py")):
        tree = ast.parse(script.read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "run"]
        if not calls:
            problems.append(f"{script.name}: does not call teachfit.workflow.run")
            continue
        fn_name = calls[0].args[0].id
        module = next(m for m, n in script_functions(script) if n == fn_name)
        fn = getattr(importlib.import_module(module), fn_name)
        users = [r for r, (s, _) in rules.items() if s == script.name]
        if not users:
            problems.append(f"{script.name}: no rule uses it")
        for rule in users:
            try:
                bind(fn, dict.fromkeys(rules[rule][1]), threads=1, rule=rule)
            except TypeError as exc:
                problems.append(str(exc))
    assert problems == []


def _rule_keys() -> dict[str, tuple[str, list[str]]]:
    """rule -> (script file name, named input/output/params keys), read from rules/*.smk."""
    out = {}
    for smk in sorted((ROOT / "rules").glob("*.smk")):
        rule = None
        section = None
        keys: list[str] = []
        script = None
        for line in smk.read_text().splitlines() + ["rule __end__:"]:
            stripped = line.strip()
            if line.startswith("rule ") and stripped.endswith(":"):
                if rule and script:
                    out[rule] = (script, keys)
                rule, section, keys, script = stripped[5:-1], None, [], None
            elif line.startswith("    ") and not line.startswith("     ") and stripped.endswith(":"):
                section = stripped[:-1]
            elif line.startswith("    ") and not line.startswith("     ") and stripped.startswith("unpack("):
                section = "unpack"
            elif section in ("input", "output", "params") and line.startswith("        ") \
                    and not line.startswith("         ") and "=" in stripped:
                key = stripped.split("=", 1)[0].strip()
                if key.isidentifier():
                    keys.append(key)
            elif section == "script" and stripped.startswith('"../scripts/'):
                script = stripped.strip('",').rsplit("/", 1)[-1]
        # unpack(f) inputs: the keys are the dict keys f returns (checked at run time by run())
    return out


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
    for env in sorted((ROOT / "envs").glob("*.yaml")):
        spec = load_yaml(env)
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
        assert "-e .." in pip, f"{env.name}: does not install the teachfit package"
        loose = [p for p in pip if p != "-e .." and "==" not in p]
        assert loose == [], f"{env.name}: unpinned requirements {loose}"
