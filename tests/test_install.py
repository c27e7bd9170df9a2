"""The package works installed non-editable, away from the repository: its schema, lm-eval
tasks, ObjecQA questions, IFS prompts and AutoIF seeds are package data (importlib.resources),
and the workflow dry-runs from a copy of the workflow files that has no src/ folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ["Snakefile", "rules", "scripts", "envs", "profiles", "config"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """A fresh venv with teachfit installed from a built wheel (dependencies: this interpreter's)."""
    tmp = tmp_path_factory.mktemp("install")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    py = venv / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    # dependencies come from the test interpreter's site-packages (a path entry: its .pth files,
    # among them an editable teachfit, are not processed)
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # build the wheel from a copy of the package sources (nothing is written into the checkout)
    pkg = tmp / "pkg"
    shutil.copytree(ROOT / "src", pkg / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy2(ROOT / "pyproject.toml", pkg / "pyproject.toml")
    wheels = tmp / "wheels"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(wheels), str(pkg)], timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheel = next(wheels.glob("teachfit-*.whl"))
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "-q", str(wheel)], check=True, timeout=300,
                   capture_output=True)
    return py


def _run(py: Path, code: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(py), "-c", code], cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_installed_package_is_the_wheel_and_has_its_data(installed, tmp_path):
    out = _run(installed, (
        "import teachfit, teachfit.io as io\n"
        "print(teachfit.__file__)\n"
        "for f in ['schema.yaml', 'objecqa.jsonl', 'objecqa_judge_set.jsonl', 'ifs_prompts.jsonl',\n"
        "          'autoif_seed_instructions.txt',\n"
        "          'lm_eval_tasks/tf_ifeval/tf_ifeval.yaml', 'lm_eval_tasks/tf_arith/tf_arith.yaml']:\n"
        "    assert io.package_data(f).is_file(), f\n"
    ), tmp_path)
    assert str(installed.parents[1]) in out.splitlines()[0], out


def test_default_config_validates_and_dry_runs_without_src(installed, tmp_path):
    wf = tmp_path / "wf"
    wf.mkdir()
    for item in WORKFLOW:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, wf / item, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, wf / item)
    assert not (wf / "src").exists()
    _run(installed, "from teachfit.schema import load_yaml\nfrom teachfit.workflow.config import validate_config\n"
                    "validate_config(load_yaml('config/config.yaml'))\n", wf)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([str(installed), "-m", "snakemake", "-n", "--cores", "1"], cwd=wf,
                          capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "materialize_model" in proc.stdout + proc.stderr


def test_console_script_ranks_teachers_without_src(installed, tmp_path):
    """The wheel installs the `teachfit` command; it dry-runs rank_teachers (no SFT, no evaluation)
    in a copy of the workflow files that has no src/ folder."""
    wf = tmp_path / "wf"
    wf.mkdir()
    for item in WORKFLOW:
        src = ROOT / item
        if src.is_dir():
            shutil.copytree(src, wf / item, symlinks=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, wf / item)
    exe = installed.parent / "teachfit"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    help_ = subprocess.run([str(exe), "--help"], cwd=wf, capture_output=True, text=True, timeout=120, env=env,
                           check=False)
    assert help_.returncode == 0 and "rank-teachers" in help_.stdout
    proc = subprocess.run([str(exe), "rank-teachers", "-n", "--cores", "1"], cwd=wf, capture_output=True,
                          text=True, timeout=600, env=env, check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "rank_teachers" in out and "generate_responses" in out
    assert "train_sft" not in out and "evaluate_checkpoints" not in out
