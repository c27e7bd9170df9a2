"""Test helpers: run the workflow in a scratch copy of the repository; simulate preemption."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COPY = ["Snakefile", "rules", "scripts", "envs", "profiles", "config", "tests/data", "tests/configs"]


def copy_workflow(dest: Path) -> Path:
    """A self-contained copy of the workflow (no results) in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in COPY:
        src = ROOT / item
        target = dest / item
        target.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, target, dirs_exist_ok=True, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(src, target)
    return dest


def _no_slurm_probe_path() -> str:
    """PATH with a failing ``scontrol`` first.

    The SLURM executor plugin calls ``scontrol show config`` (10 s timeout) whenever
    Snakemake starts. On a machine with SLURM installed but no controller running (e.g.
    after ``make test-slurm``) every local snakemake call would wait for that timeout;
    local-executor tests do not need SLURM, so they see an ``scontrol`` that fails at once.
    """
    stub = Path(tempfile.gettempdir()) / "teachfit-no-slurm-probe"
    stub.mkdir(exist_ok=True)
    exe = stub / "scontrol"
    if not exe.exists():
        exe.write_text("#!/bin/sh\nexit 1\n")
        exe.chmod(0o755)
    return f"{stub}{os.pathsep}{os.environ.get('PATH', '')}"


def snakemake(workdir: Path, *args: str, timeout: int = 1800, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = _no_slurm_probe_path()
    env.setdefault("OMP_NUM_THREADS", "1")
    env["HF_HUB_OFFLINE"] = "1"
    env["HF_DATASETS_OFFLINE"] = "1"
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-6000:]}\n{proc.stderr[-8000:]}")
    return proc


_STATS_HEADER = re.compile(r"^job\s+count\s*$")


def planned_jobs(output: str) -> dict[str, int]:
    """Rule -> job count from a dry run's 'Job stats' table (empty when nothing to do)."""
    lines = output.splitlines()
    jobs: dict[str, int] = {}
    for i, line in enumerate(lines):
        if _STATS_HEADER.match(line.strip()):
            for row in lines[i + 2:]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit():
                    break
                if parts[0] != "total":
                    jobs[parts[0]] = int(parts[1])
            break
    return jobs


def dry_run(workdir: Path, *args: str) -> dict[str, int]:
    proc = snakemake(workdir, "-n", *args, timeout=300)
    return planned_jobs(proc.stdout + "\n" + proc.stderr)


class Preempted(Exception):
    """Stands in for SIGKILL / preemption inside the process."""


def preempt_after_save(step: int):
    """A trainer callback that raises :class:`Preempted` once checkpoint-``step`` is saved."""
    from transformers import TrainerCallback

    class PreemptAfterSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Preempted(f"simulated preemption after checkpoint-{step}")

    return PreemptAfterSave()
