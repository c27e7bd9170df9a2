"""Benchmark: the IFS answering of one SFT run (rule answer_ifs_run) with the default prompt set
(80 prompts: 40 partial, 40 full) against the former 8-prompt default, per checkpoint.

    python benchmarks/bench_ifs_answers.py --base-dir results/models/gemma270m \
        --sft-dir results/sft/teacher/smol_greedy/full/gemma270m --checkpoints 2 --threads 2 \
        --json-out results/benchmarks/bench_ifs_answers.json

Both settings answer the chat-formatted IFS prompts greedily with ``ifs.prompts.max_new_tokens``
(24 in config/config.yaml) and the first 6 ObjecQA questions (24 tokens), as the default run does,
on the first ``--checkpoints`` checkpoints of the run. Reported: wall seconds and process CPU
seconds per checkpoint (CPU seconds are less sensitive to other jobs on a shared machine; with
more than one thread they include OpenMP spin time), so that the added time of the larger prompt
set can be estimated for all checkpoints of the default run. No pass/fail target: it measures
the cost the IFS issue adds (issue 16, budget).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


def _run(base_dir: Path, sft_dir: Path, n_prompts: int | None, max_new_tokens: int, threads: int) -> dict:
    from teachfit.schema import defaults
    from teachfit.generation.engines import backend_settings
    from teachfit.io import package_data
    from teachfit.models import read_manifest
    from teachfit.studies.ifs.answers import answer_ifs_run
    from teachfit.studies.ifs.prompts import make_ifs_prompts

    with tempfile.TemporaryDirectory(prefix="bench_ifs_") as tmp:
        tmp = Path(tmp)
        prompts = make_ifs_prompts(package_data("ifs_prompts.jsonl"), tmp / "prompts.parquet",
                                   defaults("ifs.prompts", limit=n_prompts), seed=0)
        entry = defaults("models.*", source="random")
        backend = backend_settings(entry, defaults("generation"))
        read_manifest(base_dir)  # fails early on a folder that is not a materialized model
        c0, w0 = time.process_time(), time.perf_counter()
        out = answer_ifs_run(tmp / "prompts.parquet", package_data("objecqa.jsonl"), base_dir, sft_dir,
                             tmp / "answers.parquet", defaults("ifs.prompts", max_new_tokens=max_new_tokens),
                             defaults("ifs.objecqa", limit=6, max_new_tokens=24), backend, threads=threads)
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    n_ck = out["checkpoint"].n_unique()
    return {"prompts": prompts.height, "checkpoints": n_ck, "rows": out.height, "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1), "wall_s_per_checkpoint": round(wall / n_ck, 1),
            "cpu_s_per_checkpoint": round(cpu / n_ck, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-dir", type=Path, required=True)
    ap.add_argument("--sft-dir", type=Path, required=True, help="a finished train_sft output (LoRA run)")
    ap.add_argument("--checkpoints", type=int, default=2, help="answer the first N checkpoints")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    entries = json.loads((args.sft_dir / "checkpoints.json").read_text())[: args.checkpoints]
    with tempfile.TemporaryDirectory(prefix="bench_sft_") as tmp:
        sft = Path(tmp)
        for e in entries:  # a run folder holding only the first N checkpoints
            (sft / e["path"]).parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(args.sft_dir / e["path"], sft / e["path"])
        (sft / "checkpoints.json").write_text(json.dumps(entries))
        result = {"base_dir": str(args.base_dir), "sft_dir": str(args.sft_dir), "threads": args.threads,
                  "max_new_tokens": args.max_new_tokens,
                  "former_8_prompts": _run(args.base_dir, sft, 8, args.max_new_tokens, args.threads),
                  "default_80_prompts": _run(args.base_dir, sft, None, args.max_new_tokens, args.threads)}
    f, d = result["former_8_prompts"], result["default_80_prompts"]
    result["added_cpu_s_per_checkpoint"] = round(d["cpu_s_per_checkpoint"] - f["cpu_s_per_checkpoint"], 1)
    result["added_wall_s_per_checkpoint"] = round(d["wall_s_per_checkpoint"] - f["wall_s_per_checkpoint"], 1)
    print(json.dumps(result, indent=2))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
