"""`make bench`: every speed target in one run, each printed as a ratio or a time.

1. generation: transformers backend on SmolLM2-135M-Instruct, 32 prompts, batched vs
   one prompt at a time (target >= 6x tokens/s, issue 13);
2. scoring: batched L(Q), L(A|Q), L(A) vs a naive per-example loop on SmolLM2-135M
   (must agree to 1e-4 relative; target >= 3x);
3. scale: `snakemake -n --configfile config/paper.yaml` wall time (target < 20 s);
4. recommendation: `teachfit rank-teachers` on the default config (4 generators x 1 base, 16
   instructions, materialised models; target <= 300 s, "a few minutes"), then with a dataset
   generator added (benchmarks/bench_rank_teachers.py; skipped with --skip-rank-teachers);
5. overhead: where the last workflow run's job time went (results/benchmarks + job logs:
   process start and imports, model loading, compute, Snakemake), summed per rule
   (benchmarks/job_overhead.py, teachfit.logs.job_times); skipped when results/ has no run.

Each benchmark runs in its own process; the summary JSON collects their results.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run_json(cmd: list[str], out: Path) -> dict:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)
    return json.loads(out.read_text())


def _slurm_probe_env() -> tuple[dict, bool]:
    """The SLURM plugin runs `scontrol show config` (10 s timeout) at every Snakemake start.
    Where scontrol exists but no controller answers (a stopped test cluster), that is a
    machine artefact, not workflow cost: give the dry run an scontrol that fails at once."""
    env = dict(os.environ)
    if not shutil.which("scontrol"):
        return env, False
    try:
        ok = subprocess.run(["scontrol", "ping"], capture_output=True, timeout=5).returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    if ok:
        return env, False
    stub = Path(tempfile.mkdtemp()) / "scontrol"
    stub.write_text("#!/bin/sh\nexit 1\n")
    stub.chmod(0o755)
    env["PATH"] = f"{stub.parent}{os.pathsep}{env.get('PATH', '')}"
    return env, True


def dry_run_paper() -> dict:
    cmd = [sys.executable, "-m", "snakemake", "-n", "--quiet", "rules", "--configfile", "config/paper.yaml"]
    env, stubbed = _slurm_probe_env()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"paper dry-run failed:\n{proc.stderr[-4000:]}")
    jobs = 0
    for line in (proc.stdout + proc.stderr).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            jobs = int(parts[1])
    return {"seconds": round(seconds, 2), "jobs": jobs, "target_s": 20.0, "passed": seconds < 20.0,
            "slurm_probe_stubbed": stubbed}


def model_stack_import_s(repeats: int = 3) -> float:
    """Median wall seconds of importing torch + transformers' auto classes in a fresh process:
    what every model-loading job pays inside its function (counted in its compute time by
    teachfit.logs.job_times, since the package imports them lazily)."""
    code = ("import time; t = time.perf_counter(); import torch; "
            "from transformers import AutoModelForCausalLM, AutoTokenizer; print(time.perf_counter() - t)")
    runs = sorted(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                       check=True).stdout.strip()) for _ in range(repeats))
    return round(runs[len(runs) // 2], 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model-dir", default="results/models/smollm2")
    ap.add_argument("--threads", type=int, default=2,
                    help="torch threads for the model benchmarks (use 1 on a shared, loaded machine)")
    ap.add_argument("--json-out", default="results/benchmarks/bench_summary.json")
    ap.add_argument("--skip-rank-teachers", action="store_true",
                    help="skip benchmark 4 (teachfit rank-teachers on the real models, a few minutes)")
    args = ap.parse_args()
    py = sys.executable
    summary: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        g_out = Path(tmp) / "gen.json"
        summary["generation"] = _run_json(
            [py, "benchmarks/bench_generation.py", "--model-dir", args.model_dir,
             "--threads", str(args.threads), "--json-out", str(g_out)], g_out)
        s_out = Path(tmp) / "score.json"
        summary["scoring"] = _run_json(
            [py, "benchmarks/bench_scoring.py", "--model-dir", args.model_dir,
             "--threads", str(args.threads), "--out", str(s_out)], s_out)
        if not args.skip_rank_teachers:
            r_out = Path(tmp) / "rank.json"
            summary["rank_teachers"] = _run_json(
                [py, "benchmarks/bench_rank_teachers.py", "--models-from", str(Path(args.model_dir).parent),
                 "--json-out", str(r_out)], r_out)
    summary["paper_dry_run"] = dry_run_paper()
    from teachfit.logs import job_times

    try:
        jt = job_times(ROOT / "results")
        summary["job_overhead"] = {"rules": jt.to_dicts(), "model_stack_import_s": model_stack_import_s()}
    except FileNotFoundError:
        jt = None
    out = Path(args.json_out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n")
    g, s, d = summary["generation"], summary["scoring"], summary["paper_dry_run"]
    print("\n== Teachfit benchmarks ==")
    print(f"generation  batched vs one-at-a-time: {g['ratio']:.2f}x tokens/s "
          f"({g['batched_tok_s']:.1f} vs {g['sequential_tok_s']:.1f}; target >= 6x) "
          f"{'PASS' if g['ratio'] >= 6 else 'MISS'}")
    print(f"scoring     batched vs naive loop:    {s['ratio']:.2f}x "
          f"(max rel err {s['max_rel_err']:.1e}; target >= 3x) {'PASS' if s['ratio'] >= 3 else 'MISS'}")
    print(f"            = {s['work_ratio']:.2f}x less arithmetic x "
          f"{s['batched_gflop_s'] / s['naive_gflop_s']:.2f}x faster arithmetic "
          f"({s['batched_gflop_s']} vs {s['naive_gflop_s']} GFLOP/s)")
    print(f"scale       paper dry-run:            {d['seconds']:.1f} s for {d['jobs']} jobs "
          f"(target < 20 s) {'PASS' if d['passed'] else 'MISS'}")
    if "rank_teachers" in summary:
        r = summary["rank_teachers"]
        sec = r["default_4_generators"]["seconds"]
        print(f"recommend   teachfit rank-teachers:   {sec:.0f} s, {r['default_4_generators']['jobs']} jobs "
              f"(4 generators x 1 base, 16 instructions; target <= 300 s) {'PASS' if sec <= 300 else 'MISS'}; "
              f"+ a dataset generator: {r['plus_dataset_generator']['seconds']:.0f} s")
    if jt is not None and jt.height > 1:
        t = jt.filter(jt["rule"] == "TOTAL").to_dicts()[0]
        if t["startup_s"] is not None:
            print(f"overhead    last run ({t['jobs']} jobs, {t['wall_s']:.0f} s summed job time): "
                  f"startup+imports {t['startup_s']:.0f} s, model loading {t['model_load_s']:.0f} s, "
                  f"compute {t['compute_s']:.0f} s, Snakemake around the script {t['other_s']:.0f} s "
                  "(per rule: python benchmarks/job_overhead.py)")
            print(f"            torch + transformers import in a fresh process: "
                  f"{summary['job_overhead']['model_stack_import_s']:.1f} s "
                  "(inside compute of every model job)")
    print(f"summary: {out}")


if __name__ == "__main__":
    main()
