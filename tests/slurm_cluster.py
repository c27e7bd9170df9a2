"""The one-node SLURM cluster of tests/slurm/start_cluster.sh as Teachfit's SLURM runs see it:
discovery (sinfo), profiles/slurm's resources clamped to the node, the submissions of a
Snakemake log and their sacct rows. Used by tests/test_slurm.py (`make test-slurm`) and
tests/slurm/rehearsal.py (`make rehearsal`)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MEM_CAP_MB = 3000
RUNTIME_CAP_MIN = 30
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY",
                   "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE"}

SUBMIT_RE = re.compile(r"Job (\d+) has been submitted with SLURM jobid (\d+) \(log: ([^)]*)\)")
RUN_ID_RE = re.compile(r"SLURM run ID: (\S+)")

@dataclass(frozen=True)
class Cluster:
    partition: str
    account: str
    cpus: int
    mem_mb: int
    gpus: int


@dataclass(frozen=True)
class Submission:
    snakemake_jobid: int
    slurm_jobid: str
    rule: str


@dataclass(frozen=True)
class SacctRow:
    jobid: str
    name: str
    state: str
    exit_code: str
    alloc_tres: str


def _cmd(args: list[str], timeout: float = 30) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout



def _clamp(value: int | str, cap: int) -> int | str:
    """min(value, cap); a resource expression (e.g. "720 * attempt") is wrapped in min()."""
    if isinstance(value, int):
        return min(value, cap)
    return f"min({value},{cap})".replace(" ", "")


def _clamped(key: str, value: int | str, cluster: Cluster) -> int | str | None:
    """A profile resource sized down to the test node (None: drop it)."""
    if key == "mem_mb":
        return _clamp(value, min(MEM_CAP_MB, cluster.mem_mb))
    if key == "runtime":
        return _clamp(value, RUNTIME_CAP_MIN)
    if key == "gpu":
        return _clamp(value, cluster.gpus)
    if key == "gpu_model":
        return None  # the test node's fake GPUs have no type
    return value


def _default_resources(profile: dict, cluster: Cluster) -> list[str]:
    """The profile's default-resources with the site placeholders filled and sizes clamped."""
    res = dict(profile["default-resources"])
    assert {"slurm_partition", "slurm_account", "mem_mb", "runtime", "cpus_per_task"} <= set(res)
    res.update(slurm_partition=cluster.partition, slurm_account=cluster.account)
    out = [(k, _clamped(k, v, cluster)) for k, v in res.items()]
    return [f"{k}={v}" for k, v in out if v is not None]


def _set_resources(profile: dict, cluster: Cluster) -> list[str]:
    """The profile's set-resources, clamped to what the test node has (GPU requests kept)."""
    out = []
    for rule, res in profile["set-resources"].items():
        for key, value in res.items():
            value = _clamped(key, value, cluster)
            if value is not None:
                out.append(f"{rule}:{key}={value}")
    return out


def _slurm_args(profile: dict, cluster: Cluster) -> list[str]:
    """--executor slurm through the real profile; only site values and sizes overridden."""
    return [
        "--executor", "slurm",
        "--workflow-profile", "profiles/slurm",
        "--default-resources", *_default_resources(profile, cluster),
        "--set-resources", *_set_resources(profile, cluster),
        # Jobs run with OMP_NUM_THREADS=1: one CPU each lets two share the 2-CPU node. Twice
        # as many jobs as CPUs are queued, so SLURM starts the next one the moment a job ends
        # instead of at Snakemake's next status poll.
        "--max-threads", "1",
        "--jobs", str(2 * max(1, cluster.cpus)),
        "--slurm-init-seconds-before-status-checks", "2",
        "--slurm-keep-successful-logs",
    ]



def _submissions(log: str) -> list[Submission]:
    subs = []
    for m in SUBMIT_RE.finditer(log):
        rule = re.search(r"/rule_([A-Za-z0-9_]+)/", m[3])
        subs.append(Submission(int(m[1]), m[2], rule[1] if rule else "?"))
    return subs


def _job_gpus(log: str) -> dict[int, int]:
    """Snakemake job id -> GPUs it asked for (`gpu=` in the job's logged resources)."""
    gpus: dict[int, int] = {}
    jobid = None
    for line in log.splitlines():
        if re.match(r"^(local)?rule \w+:$", line):
            jobid = None
        elif m := re.match(r"^    jobid: (\d+)$", line):
            jobid = int(m[1])
        elif (m := re.match(r"^    resources: (.*)$", line)) and jobid is not None:
            res = dict(kv.split("=", 1) for kv in m[1].split(", ") if "=" in kv)
            gpus[jobid] = int(res.get("gpu", 0))
    return gpus



def _sacct(jobids: list[str], run_id: str, wait_s: float = 60) -> dict[str, SacctRow]:
    """sacct rows of this run's jobs (ids can repeat across purged clusters, so the run id
    filters too), waiting until every one has a terminal state."""
    deadline = time.monotonic() + wait_s
    while True:
        out = _cmd(["sacct", "-X", "-n", "-P", "-j", ",".join(jobids), f"--name={run_id}",
                    "--format=JobIDRaw,JobName,State,ExitCode,AllocTRES"])
        rows = {}
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == 5:
                rows[parts[0]] = SacctRow(parts[0], parts[1], parts[2].split()[0], parts[3],
                                          parts[4])
        if all(j in rows and rows[j].state in TERMINAL_STATES for j in jobids):
            return rows
        if time.monotonic() > deadline:
            return rows
        time.sleep(2)


def _sacct_table(jobids: list[str], run_id: str) -> str:
    return _cmd(["sacct", "-X", "-j", ",".join(jobids), f"--name={run_id}",
                 "--format=JobID,JobName%36,State,ExitCode,Elapsed,AllocTRES%48,Account"])


def _failed_job_logs(workdir: Path, rows: dict[str, SacctRow]) -> str:
    """Tails of the SLURM logs of jobs that did not complete (for assertion messages)."""
    parts = []
    for row in rows.values():
        if row.state == "COMPLETED":
            continue
        for log in (workdir / ".snakemake" / "slurm_logs").rglob(f"{row.jobid}.log"):
            parts.append(f"--- {log} ---\n" + "\n".join(log.read_text().splitlines()[-25:]))
    return "\n".join(parts)



class ClusterError(RuntimeError):
    """The cluster is missing or does not answer; the message says what to run."""


def discover_cluster() -> Cluster:
    """The cluster's default (or $TEACHFIT_SLURM_PARTITION) partition and its node's size.
    Raises :class:`ClusterError` when sinfo/sacct are missing or the cluster does not answer."""
    if shutil.which("sinfo") is None or shutil.which("sacct") is None:
        raise ClusterError("sinfo/sacct are not installed: "
                           "run tests/slurm/start_cluster.sh (or `make test-slurm`)")
    try:
        rows = _cmd(["sinfo", "-h", "-N", "-o", "%P|%t|%c|%m|%G"]).split()
        _cmd(["sacct", "-n", "-X", "-S", "now-1minutes"])  # slurmdbd answers
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        raise ClusterError(f"the cluster does not answer: {e}") from e
    nodes = [r.split("|") for r in rows if r.count("|") == 4]
    usable = [n for n in nodes if n[1] in ("idle", "mix", "alloc")]
    if not usable:
        raise ClusterError(f"no usable SLURM node (sinfo: {rows}); run tests/slurm/start_cluster.sh")
    default = next((n[0].rstrip("*") for n in usable if n[0].endswith("*")), usable[0][0])
    partition = os.environ.get("TEACHFIT_SLURM_PARTITION", default)
    node = next((n for n in usable if n[0].rstrip("*") == partition), None)
    if node is None:
        raise ClusterError(f"partition {partition!r} has no usable node (sinfo: {rows})")
    gpus = re.search(r"gpu:(?:[^:,(]+:)?(\d+)", node[4])
    return Cluster(partition=partition,
                   account=os.environ.get("TEACHFIT_SLURM_ACCOUNT", "teachfit"),
                   cpus=int(node[2]), mem_mb=int(node[3]), gpus=int(gpus[1]) if gpus else 0)
