"""Real SLURM runs through profiles/slurm (`make test-slurm`).

Needs the one-node cluster of tests/slurm/start_cluster.sh (slurmctld, slurmd, slurmdbd +
MariaDB) and TEACHFIT_SLURM=1; skipped otherwise. With TEACHFIT_SLURM=1 a missing or
unhealthy cluster is a failure, not a skip.

Both tests run Snakemake with `--executor slurm --workflow-profile profiles/slurm`, parse the
SLURM job ids from its log ("Job N has been submitted with SLURM jobid M") and check each one
in `sacct` (the accounting database, not slurmctld's memory). Site values come from the
cluster: partition and account via --default-resources, and the profile's per-rule
resources are clamped to the node's size (CPUs, memory, GPUs) via --set-resources, keeping
the profile's GPU requests.

Environment: TEACHFIT_SLURM_ACCOUNT (default teachfit), TEACHFIT_SLURM_PARTITION (default:
the cluster's default partition), TEACHFIT_SLURM_TIMEOUT (seconds per Snakemake run, default
1500), TEACHFIT_SLURM_LOG (copy of both runs' logs and sacct tables).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm"
SMOKE_SNAKEFILE = REPO / "tests" / "slurm" / "smoke" / "Snakefile"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# What the real workflow needs in its temporary copy (results go there, not into the repo).
WORKFLOW_PARTS = ["Snakefile", "rules", "scripts", "src", "config", "envs", "profiles",
                  "tests/configs", "tests/data"]

from slurm_cluster import (  # noqa: E402  (tests/ is on sys.path, as for the other helpers)
    RUN_ID_RE,
    ClusterError,
    SacctRow,
    Submission,
    _failed_job_logs,
    _job_gpus,
    _sacct,
    _sacct_table,
    _slurm_args,
    _submissions,
    discover_cluster,
)

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.environ.get("TEACHFIT_SLURM") != "1",
                       reason="real SLURM tests: run `make test-slurm` (sets TEACHFIT_SLURM=1)"),
]


@pytest.fixture(scope="module")
def cluster():
    try:
        return discover_cluster()
    except ClusterError as e:
        pytest.fail(f"TEACHFIT_SLURM=1 but {e}")


@pytest.fixture(scope="module")
def profile() -> dict:
    import yaml

    with open(PROFILE / "config.yaml") as f:
        return yaml.safe_load(f)


_LOG_STARTED = False


def _save_log(workdir: Path, title: str, text: str) -> Path:
    """results/slurm_test.log in the workdir; appended to $TEACHFIT_SLURM_LOG when set."""
    global _LOG_STARTED
    path = workdir / "results" / "slurm_test.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    target = os.environ.get("TEACHFIT_SLURM_LOG")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        with open(target, "w" if not _LOG_STARTED else "a") as f:
            f.write(f"===== {title} ({workdir}) =====\n{text}\n")
        _LOG_STARTED = True
    return path


def _run(args: list[str], cwd: Path) -> tuple[int, str, float]:
    """Run Snakemake; on timeout interrupt it (it cancels its jobs) and scancel the rest."""
    timeout = float(os.environ.get("TEACHFIT_SLURM_TIMEOUT", "1500"))
    start = time.monotonic()
    proc = subprocess.Popen(SNAKEMAKE + args, cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        run_id = RUN_ID_RE.search(out or "")
        if run_id:
            subprocess.run(["scancel", "--name", run_id[1]], check=False)
        out = (out or "") + f"\n[test_slurm] timed out after {timeout:.0f} s\n"
        return -1, out, time.monotonic() - start
    return proc.returncode, out, time.monotonic() - start


def _check_gpus(log: str, subs: list[Submission], rows: dict[str, SacctRow], table: str) -> int:
    """Each job's gpu request reached SLURM: sacct shows exactly that gres/gpu allocation."""
    gpus = _job_gpus(log)
    n_gpu_jobs = 0
    for s in subs:
        assert s.snakemake_jobid in gpus, f"no resources logged for job {s.snakemake_jobid}"
        tres = rows[s.slurm_jobid].alloc_tres
        if rows[s.slurm_jobid].state != "COMPLETED" and not tres:
            continue  # a job that never started has no allocation to check
        want = gpus[s.snakemake_jobid]
        if want:
            n_gpu_jobs += 1
            assert f"gres/gpu={want}" in tres.split(","), (s, want, table)
        else:
            assert "gres/gpu" not in tres, (s, table)
    return n_gpu_jobs


def _check_run(workdir: Path, title: str, rc: int, log: str, elapsed: float):
    """Save the log (+ sacct table); return (run id, submissions, sacct rows, sacct table)."""
    run_id = RUN_ID_RE.search(log)
    subs = _submissions(log)
    ids = [s.slurm_jobid for s in subs]
    rows = _sacct(ids, run_id[1]) if ids and run_id else {}
    table = _sacct_table(ids, run_id[1]) if ids and run_id else "(no SLURM job)\n"
    path = _save_log(workdir, title, f"{log}\n[test_slurm] exit code {rc}, {elapsed:.1f} s\n"
                                     f"[test_slurm] sacct:\n{table}")
    print(f"{title}: {len(subs)} SLURM jobs in {elapsed:.1f} s; log {path}\n{table}")
    assert run_id, f"no 'SLURM run ID' in the log ({path}): not run by the slurm executor?"
    assert subs, f"no SLURM submission in the log ({path})"
    assert len(set(ids)) == len(ids), f"SLURM job ids repeat: {ids}"
    missing = [j for j in ids if j not in rows]
    assert not missing, f"sacct knows no jobs {missing} named {run_id[1]}:\n{table}"
    return run_id[1], subs, rows, table


def test_smoke_workflow_on_slurm(cluster, profile, tmp_path):
    workdir = tmp_path / "smoke"
    workdir.mkdir()
    shutil.copytree(PROFILE, workdir / "profiles" / "slurm")
    rc, log, elapsed = _run(["--snakefile", str(SMOKE_SNAKEFILE), *_slurm_args(profile, cluster)],
                            cwd=workdir)
    _, subs, rows, table = _check_run(workdir, "smoke", rc, log, elapsed)
    assert rc == 0, f"snakemake failed ({rc}):\n{log[-4000:]}\n{_failed_job_logs(workdir, rows)}"

    summary = json.loads((workdir / "results/smoke/summary.json").read_text())
    assert summary["totals"] == {"results/smoke/numbers_1.txt": 55,
                                 "results/smoke/numbers_2.txt": 210}
    by_rule: dict[str, list[Submission]] = {}
    for s in subs:
        by_rule.setdefault(s.rule, []).append(s)
    assert sorted(by_rule) == ["gpu_probe", "make_numbers", "resume_after_failure", "summarize"]
    assert len(by_rule["make_numbers"]) == 2

    # The job ids the jobs saw themselves are the ones Snakemake logged and sacct knows.
    assert summary["slurm_job_id"] == by_rule["summarize"][0].slurm_jobid
    probe = (workdir / "results/smoke/gpu_probe.txt").read_text()
    assert f"slurm_job_id={by_rule['gpu_probe'][0].slurm_jobid} " in probe
    assert "gpus_on_node=1" in probe, probe
    assert _check_gpus(log, subs, rows, table) == 1  # gpu_probe only

    # retries: the first attempt failed after writing scratch state; the resubmitted job
    # (a new SLURM job) resumed from it.
    first, second = (s.slurm_jobid for s in by_rule["resume_after_failure"])
    assert rows[first].state == "FAILED", table
    assert rows[second].state == "COMPLETED", table
    resumed = (workdir / "results/smoke/resumed.txt").read_text()
    assert f"resumed_from_step=1 first_job={first} slurm_job_id={second}" in resumed
    others = [j for j in rows if j != first]
    assert all(rows[j].state == "COMPLETED" for j in others), table


def _copy_workflow(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".snakemake", "results")
    for part in WORKFLOW_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, dest / part, ignore=ignore)
        else:
            (dest / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / part)


def test_tiny_workflow_on_slurm(cluster, profile, tmp_path):
    workdir = tmp_path / "repo"
    _copy_workflow(workdir)
    rc, log, elapsed = _run(["--configfile", "tests/configs/tiny.yaml",
                             *_slurm_args(profile, cluster)], cwd=workdir)
    _, subs, rows, table = _check_run(workdir, "tiny workflow", rc, log, elapsed)
    assert rc == 0, f"snakemake failed ({rc}):\n{log[-4000:]}\n{_failed_job_logs(workdir, rows)}"
    not_done = {j: r.state for j, r in rows.items() if r.state != "COMPLETED"}
    assert not not_done, f"jobs not COMPLETED in sacct: {not_done}\n{table}"

    # Every non-local job went through SLURM, once.
    remote_jobs = re.findall(r"^rule (\w+):$", log, flags=re.M)
    assert len(subs) == len(remote_jobs), (len(subs), len(remote_jobs))
    # GPU requests (from the profile or the rules) reached the scheduler; training and
    # evaluation jobs are among them.
    n_gpu_jobs = _check_gpus(log, subs, rows, table)
    if cluster.gpus:
        assert n_gpu_jobs > 0
        gpu_rules = {s.rule for s in subs if _job_gpus(log)[s.snakemake_jobid] > 0}
        assert {"train_sft", "evaluate_checkpoints"} <= gpu_rules, gpu_rules

    # Nothing left to do: every target of the tiny config exists and is up to date.
    check = subprocess.run(SNAKEMAKE + ["-n", "--configfile", "tests/configs/tiny.yaml",
                                        "--workflow-profile", "none"],
                           cwd=workdir, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0 and "Nothing to be done" in check.stdout + check.stderr, (
        check.stdout[-3000:] + check.stderr[-3000:])
