"""`make rehearsal`: config/paper.yaml end to end on the one-node SLURM cluster, with tiny models.

Run with .venv-vllm's Python (every job runs in that one environment: the vLLM engine, lm-eval,
training and analysis), after tests/slurm/start_cluster.sh:

    .venv-vllm/bin/python tests/slurm/rehearsal.py [--workdir results/rehearsal] [--timeout 7200]

Steps (docs/rehearsal.md):
1. copy the workflow into <workdir>/run; write the rehearsal config (teachfit.rehearsal.
   rehearsal_config: paper.yaml with sizes, list cuts and sources changed, each change listed in
   <workdir>/changes.md) and its local seed files;
2. seed a hub cache (<workdir>/hf_home) with a tiny model of each used hub checkpoint's family
   and small win-rate benchmark files; every job runs with HF_HOME there and HF_HUB_OFFLINE=1;
3. start `vllm serve` on a tiny Llama for the API models (GPT-4 generator, win-rate judge);
4. dry-run paper.yaml and the rehearsal (jobs per rule), then run the rehearsal through
   `--executor slurm --workflow-profile profiles/slurm` (site values and sizes clamped to the node
   as in `make test-slurm`);
5. write <workdir>/rehearsal.log (Snakemake's log, jobs per rule next to paper.yaml's, the rules
   paper.yaml runs that the rehearsal did not, sacct of every job) and <workdir>/summary.json.

Exit 0 only when Snakemake exited 0, every SLURM job is COMPLETED in sacct, and every rule of
paper.yaml's dry run ran except the hub-only ones (HUB_ONLY_RULES).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

from slurm_cluster import (  # noqa: E402
    RUN_ID_RE,
    _sacct,
    _sacct_table,
    _slurm_args,
    _submissions,
    discover_cluster,
)

from teachfit.rehearsal import (  # noqa: E402
    build_tiny_checkpoint,
    changes_table,
    rehearsal_config,
    seed_tiny_hub,
    write_seed_files,
)

WORKFLOW_PARTS = ["Snakefile", "rules", "scripts", "config", "envs", "profiles"]
# Rules that only fetch from the hub with `datasets` (no hub cache stand-in for a data set's
# builder): the rehearsal's seed sets are local files instead.
HUB_ONLY_RULES = {"download_seedset": "datasets.load_dataset of a hub data set (seed sets are local files here)"}
API_MODEL = "rehearsal-api"
API_KEY_ENV = "TEACHFIT_REHEARSAL_API_KEY"
SERVE_TIMEOUT_S = 600


def job_stats(log: str) -> dict[str, int]:
    """Snakemake's "Job stats" table of a log as {rule: count} (the first table)."""
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\n\s*total\s+(\d+)", log, flags=re.S)
    if not m:
        raise ValueError("no 'Job stats' table in the Snakemake log")
    out = {}
    for line in m[1].splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            out[parts[0]] = int(parts[1])
    return out


def finished_rules(log: str) -> Counter:
    """Rules of the jobs Snakemake reported finished ("Finished jobid: N (Rule: r)")."""
    return Counter(re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", log))


class Server:
    """`vllm serve` of .venv-vllm in its own process group."""

    def __init__(self, model_dir: Path, log_path: Path, api_key: str) -> None:
        # a fixed port (TEACHFIT_REHEARSAL_PORT), so that a --resume run keeps the API models'
        # api_base (a changed one is a changed param: their jobs would run again)
        self.port = int(os.environ.get("TEACHFIT_REHEARSAL_PORT", "18431"))
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", self.port)) == 0:
                raise RuntimeError(f"port {self.port} is taken: set TEACHFIT_REHEARSAL_PORT")
        self.model_dir, self.log_path, self.api_key = model_dir, log_path, api_key
        self.base = f"http://127.0.0.1:{self.port}/v1"
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        cmd = [str(Path(sys.executable).parent / "vllm"), "serve", str(self.model_dir),
               "--served-model-name", API_MODEL, "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", "bfloat16", "--max-model-len", "4096", "--enforce-eager", "--seed", "0",
               "--max-logprobs", "20", "--api-key", self.api_key]
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": "1"}
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdout=self.log_path.open("w"), stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        while time.monotonic() < t0 + SERVE_TIMEOUT_S:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                pass
            time.sleep(2)
        self.stop()
        raise RuntimeError(f"vllm serve not ready after {SERVE_TIMEOUT_S} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)


def snakemake(args: list[str], cwd: Path, env: dict[str, str], timeout: float, log_path: Path) -> tuple[int, str]:
    """Run Snakemake (teeing its output to ``log_path``); on timeout interrupt it and scancel its jobs."""
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "snakemake", *args], cwd=cwd, env=env,
                                stdout=log, stderr=subprocess.STDOUT, text=True)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                rc = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = proc.wait()
            text = log_path.read_text()
            run_id = RUN_ID_RE.search(text)
            if run_id:
                subprocess.run(["scancel", "--name", run_id[1]], check=False)
            log.write(f"\n[rehearsal] timed out after {timeout:.0f} s\n")
            rc = -1
    return rc, log_path.read_text()


def dry_run(configfile: str, cwd: Path, env: dict[str, str], log_path: Path) -> dict[str, int] | None:
    """Jobs per rule of ``snakemake -n --forceall --configfile <configfile>`` in ``cwd`` (the whole
    plan up to the checkpoints, whatever outputs exist, so a --resume run's table shows the full
    plan too); None (the log's tail printed) when the dry run fails."""
    rc, log = snakemake(["-n", "--forceall", "--configfile", configfile], cwd, env, 600, log_path)
    if rc != 0:
        print(log[-3000:])
        return None
    return job_stats(log)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default=str(REPO / "results" / "rehearsal"))
    ap.add_argument("--timeout", type=float, default=7200, help="seconds for the SLURM run")
    ap.add_argument("--dry-run", action="store_true", help="set up and dry-run only")
    ap.add_argument("--resume", action="store_true",
                    help="keep <workdir>/run/results and the hub cache of an earlier rehearsal (Snakemake "
                         "then runs what is missing or out of date); the workflow files are copied anew")
    args = ap.parse_args(argv)
    t_start = time.monotonic()
    work = Path(args.workdir).resolve()
    run = work / "run"
    if run.exists() and not args.resume:
        shutil.rmtree(run)
    run.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, run / part, dirs_exist_ok=True)
        else:
            shutil.copy2(src, run / part)
    paper = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())
    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())

    # 1. the config and its seed files
    server = None
    api_key = "rehearsal-key"
    seed_dir = "rehearsal_data/seeds"
    cfg, changes = rehearsal_config(paper, api_base="http://127.0.0.1:0/v1", api_model=API_MODEL,
                                    api_key_env=API_KEY_ENV, seed_dir=seed_dir)
    seeds = write_seed_files(cfg, run, seed_dir,
                             [REPO / "config/seeds/general.jsonl", REPO / "config/seeds/math.jsonl",
                              REPO / "config/seeds/code.jsonl"])
    # 2. the hub cache
    hf_home = work / "hf_home"
    if hf_home.exists() and not args.resume:
        shutil.rmtree(hf_home)
    t0 = time.monotonic()
    merged_models = {**base.get("models", {}), **cfg["models"]}
    hub = seed_tiny_hub({**cfg, "models": merged_models}, hf_home, skip_existing=args.resume)
    hub_s = time.monotonic() - t0
    # 3. the local OpenAI-compatible server
    api_dir = work / "api_model"
    if not (api_dir / "config.json").exists():
        shutil.rmtree(api_dir, ignore_errors=True)
        build_tiny_checkpoint("meta-llama/Llama-3.1-8B-Instruct", api_dir)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", API_KEY_ENV: api_key, "OMP_NUM_THREADS": "1",
           "VLLM_CPU_KVCACHE_SPACE": "1", "TOKENIZERS_PARALLELISM": "false"}
    serve_s = None
    if not args.dry_run:
        server = Server(api_dir, work / "vllm_serve.log", api_key)
        serve_s = server.start()
        cfg, changes = rehearsal_config(paper, api_base=server.base, api_model=API_MODEL,
                                        api_key_env=API_KEY_ENV, seed_dir=seed_dir)
    (run / "config" / "rehearsal.yaml").write_text(
        "# Written by tests/slurm/rehearsal.py (teachfit.rehearsal.rehearsal_config): config/paper.yaml\n"
        "# with the changes of changes.md.\n" + yaml.safe_dump(cfg, sort_keys=False))
    (work / "changes.md").write_text(changes_table(changes))

    try:
        # 4. dry runs: paper.yaml in the repository, the rehearsal in its copy
        paper_jobs = dry_run("config/paper.yaml", REPO, env, work / "paper_dryrun.log")
        planned = dry_run("config/rehearsal.yaml", run, env, work / "rehearsal_dryrun.log")
        if paper_jobs is None or planned is None:
            return 2
        rc_rules, rules_out = snakemake(["--list-rules", "--configfile", "config/rehearsal.yaml"], run, env, 600,
                                        work / "list_rules.log")
        workflow_rules = sorted({line.strip() for line in rules_out.splitlines()
                                 if rc_rules == 0 and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", line.strip())})
        if args.dry_run:
            _report(work, paper_jobs, planned, Counter(), "", 0, time.monotonic() - t_start, hub, seeds,
                    hub_s, serve_s, [], {}, workflow_rules=workflow_rules)
            return 0
        # 5. the SLURM run
        cluster = discover_cluster()
        profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
        t_run = time.monotonic()
        rc, log = snakemake(["--configfile", "config/rehearsal.yaml", *_slurm_args(profile, cluster)],
                            run, env, args.timeout, work / "snakemake.log")
        run_s = time.monotonic() - t_run
    finally:
        if server is not None:
            server.stop()
    subs = _submissions(log)
    run_id = RUN_ID_RE.search(log)
    ids = [s.slurm_jobid for s in subs]
    rows = _sacct(ids, run_id[1]) if ids and run_id else {}
    table = _sacct_table(ids, run_id[1]) if ids and run_id else "(no SLURM job)\n"
    # every SLURM job of this rehearsal: this invocation's, and with --resume the earlier ones'
    jobs_file = work / "slurm_jobs.jsonl"
    earlier = [json.loads(line) for line in jobs_file.read_text().splitlines()] if args.resume and jobs_file.exists() else []
    now = [{"run_id": run_id[1] if run_id else None, "slurm_jobid": s.slurm_jobid, "rule": s.rule,
            "state": rows[s.slurm_jobid].state if s.slurm_jobid in rows else "UNKNOWN"} for s in subs]
    local = [{"run_id": None, "slurm_jobid": None, "rule": r, "state": "COMPLETED (local)"}
             for r, n in finished_rules(log).items() if r not in {s.rule for s in subs} for _ in range(n)]
    jobs = earlier + now + local
    jobs_file.write_text("".join(json.dumps(j) + "\n" for j in jobs))
    ran = Counter(j["rule"] for j in jobs if j["state"].startswith("COMPLETED"))
    invocations = len({j["run_id"] for j in jobs if j["run_id"]})
    # sacct of every invocation's jobs (sacct filters by the run id, Snakemake's SLURM job name)
    by_run: dict[str, list[str]] = {}
    for j in jobs:
        if j["run_id"]:
            by_run.setdefault(j["run_id"], []).append(str(j["slurm_jobid"]))
    table = "".join(f"--- invocation {k}: run id {rid}, {len(jids)} SLURM jobs ---\n{_sacct_table(jids, rid)}"
                    for k, (rid, jids) in enumerate(by_run.items(), 1)) or table
    return _report(work, paper_jobs, planned, ran, table, rc, run_s, hub, seeds, hub_s, serve_s, subs, rows,
                   total_s=time.monotonic() - t_start, log=log, invocations=invocations,
                   workflow_rules=workflow_rules, jobs=jobs)


def _report(work: Path, paper_jobs: dict[str, int], planned: dict[str, int], ran: Counter, table: str,
            rc: int, run_s: float, hub: dict, seeds: dict, hub_s: float, serve_s: float | None,
            subs: list, rows: dict, total_s: float | None = None, log: str = "", invocations: int = 1,
            workflow_rules: list[str] = (), jobs: list[dict] = ()) -> int:
    # ``jobs``: every SLURM / local job of all invocations (slurm_jobs.jsonl rows).
    # A dry run counts only the jobs it can plan before a checkpoint's output exists; rules that
    # the rehearsal ran but neither dry run lists come after a checkpoint (marked "*").
    rules = sorted(set(paper_jobs) | set(planned) | set(ran))
    after_checkpoint = sorted(r for r in ran if r not in paper_jobs and r not in planned)
    lines = [f"{'rule':32} {'paper.yaml':>10} {'rehearsal':>10} {'ran':>6}"]
    for r in rules:
        mark = "*" if r in after_checkpoint else ""
        lines.append(f"{r + mark:32} {paper_jobs.get(r, 0):>10} {planned.get(r, 0):>10} {ran.get(r, 0):>6}")
    lines.append(f"{'total':32} {sum(paper_jobs.values()):>10} {sum(planned.values()):>10} {sum(ran.values()):>6}")
    not_ran = [r for r in paper_jobs if ran.get(r, 0) == 0 and r not in HUB_ONLY_RULES]
    # rules of the workflow that neither paper.yaml's dry run plans nor the rehearsal ran
    unreached = [r for r in workflow_rules if r not in paper_jobs and r not in ran]
    hub_only = {r: why for r, why in HUB_ONLY_RULES.items() if r in paper_jobs}
    failed = [s.slurm_jobid for s in subs if rows.get(s.slurm_jobid) is None or rows[s.slurm_jobid].state != "COMPLETED"]
    slurm_all = [j for j in jobs if j["slurm_jobid"] is not None]
    # jobs of any invocation that did not complete (earlier ones: failures fixed before a --resume);
    # each must have its rule completed later, or not_ran names it
    failed_all = [f"{j['slurm_jobid']} ({j['rule']}: {j['state']})" for j in slurm_all
                  if not j["state"].startswith("COMPLETED")]
    ok = rc == 0 and not not_ran and not failed and bool(slurm_all)
    summary = {
        "exit_code": rc, "ok": ok, "run_seconds": round(run_s, 1),
        "total_seconds": round(total_s, 1) if total_s is not None else None,
        "slurm_jobs": len(subs), "failed_slurm_jobs": failed, "slurm_invocations": invocations,
        "slurm_jobs_all_invocations": len(slurm_all), "not_completed_all_invocations": failed_all,
        "paper_jobs": paper_jobs, "planned_jobs": planned, "ran_jobs": dict(ran),
        "paper_rules_not_run": not_ran, "hub_only_rules": hub_only,
        "rules_after_checkpoint": after_checkpoint, "workflow_rules_not_in_paper_run": unreached,
        "hub_cache": hub, "hub_cache_seconds": round(hub_s, 1),
        "vllm_serve_ready_seconds": round(serve_s, 1) if serve_s is not None else None,
        "seed_files": seeds,
    }
    (work / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    text = "\n".join([
        "===== jobs per rule: paper.yaml dry run | rehearsal dry run | rehearsal jobs COMPLETED "
        f"(SLURM, and local rules; over {invocations} Snakemake invocation(s)) =====",
        *lines,
        "* after a checkpoint: no dry run can count these jobs (they are planned once the checkpoint's "
        "output exists); paper.yaml runs them too",
        f"paper.yaml rules not run (besides hub-only): {not_ran or 'none'}",
        f"workflow rules neither paper.yaml's dry run nor the rehearsal reached: {unreached or 'none'}",
        f"hub-only rules not run: {hub_only}",
        f"SLURM jobs of this invocation: {len(subs)}, not COMPLETED: {failed or 'none'}",
        f"SLURM jobs of all {invocations} invocation(s): {len(slurm_all)}, not COMPLETED (each rule completed "
        f"in a later job, else listed as not run above): {failed_all or 'none'}",
        f"Snakemake exit code: {rc}; SLURM run {run_s / 60:.1f} min"
        + (f"; whole rehearsal {total_s / 60:.1f} min" if total_s is not None else ""),
        "===== sacct =====", table,
        "===== Snakemake log =====", log,
    ])
    (work / "rehearsal.log").write_text(text)
    print("\n".join(lines[:]) + f"\nnot run: {not_ran}\nfailed: {failed}\nexit {rc}; ok={ok}; log {work / 'rehearsal.log'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
