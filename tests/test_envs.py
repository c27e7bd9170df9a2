"""The rule environments (envs/*.yaml) against their locks (envs/locks/*.txt): checked without a
resolver (the resolution itself is `make check-envs`, envs/envlock.py, which needs PyPI)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("envlock", ROOT / "envs" / "envlock.py")
envlock = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(envlock)

ENVS = sorted(p.stem for p in (ROOT / "envs").glob("*.yaml"))


def test_every_env_has_requirements_and_a_lock():
    assert ENVS and ENVS == envlock.env_names()
    for env in ENVS:
        assert (ROOT / "envs" / "locks" / f"{env}.txt").exists(), env


@pytest.mark.parametrize("env", ENVS)
def test_env_is_its_lock_and_satisfies_its_requirements(env):
    """Fresh lock (input digest), yaml pins == lock pins, python/pip/project install present,
    every requirement (requirements file and pyproject dependencies) satisfied by the lock."""
    assert envlock.check_static(env) == []


@pytest.mark.parametrize("env", ENVS)
def test_env_pins_are_compatible_with_its_lock(env):
    """Each exact pin the env file installs is the lock's version (so a pin against what the
    engine requires would have to be in a lock that a resolver produced, which `make check-envs`
    rejects)."""
    pins = envlock.lock_pins(env)
    pip = [e for e in envlock.yaml_pip(env) if e != envlock.PROJECT]
    assert pip and all("==" in e for e in pip)
    yaml_pins = envlock.read_pins(pip, env)
    assert envlock.unsatisfied([Requirement(f"{n}=={v}") for n, v in yaml_pins.items()], pins) == []


def test_vllm_envs_take_numpy_from_the_engine():
    """The issue-22 conflict: vllm 0.33.0 -> mistral-common -> numpy < 2.4 on Python 3.11."""
    for env in ("gen", "eval_vllm"):
        assert envlock.unsatisfied([Requirement("numpy<2.4")], envlock.lock_pins(env)) == []


def test_a_pin_against_the_lock_is_reported():
    """Negative control: the numpy pin the vLLM envs used to carry, against gen's lock."""
    pins = envlock.lock_pins("gen")
    problems = envlock.unsatisfied([*envlock.direct_requirements("gen"), Requirement("numpy==2.4.6")], pins)
    assert len(problems) == 1 and "numpy==2.4.6" in problems[0] and pins["numpy"] in problems[0]
    assert envlock.unsatisfied([Requirement("not-a-locked-package")], pins) == [
        "requirement not-a-locked-package is not in the lock"]


def test_stale_lock_is_reported(tmp_path, monkeypatch):
    """Editing a requirements file without re-locking makes the lock stale."""
    req = tmp_path / "requirements"
    req.mkdir()
    for p in (ROOT / "envs" / "requirements").glob("*.in"):
        (req / p.name).write_text(p.read_text())
    (req / "analysis.in").write_text((req / "analysis.in").read_text() + "rich>=13\n")
    monkeypatch.setattr(envlock, "REQUIREMENTS", req)
    problems = envlock.check_static("analysis")
    assert any("stale" in p for p in problems) and any("rich>=13 is not in the lock" in p for p in problems)
