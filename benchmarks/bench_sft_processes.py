"""SFT as 2 processes (DDP, gloo) vs 1 process on CPU, same global batch: per-step losses side by
side and wall times (docs/multi-gpu.md, "Measured").

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/bench_sft_processes.py --steps 20

Tiny random llama (teachfit.models.materialize), LoRA (dropout 0), 64 examples, per-device batch
2; one process accumulates 2 micro batches per step, each of the 2 processes 1 (global batch 4
either way); one torch thread per process. Wall = the whole train_sft call (2 processes: torchrun
start, imports and model load in each process included); train = the Trainer's train_runtime.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import polars as pl

from teachfit.io import write_parquet
from teachfit.models import materialize
from teachfit.schema import defaults
from teachfit.training.sft import train_sft


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        materialize("tiny", {"source": "random", "arch": "llama"}, base / "tiny")
        rows = [{"id": f"ex{i}", "instruction": f"what is {i} plus {i} ?",
                 "response": f"the answer is {2 * i} ." * (1 + i % 3)} for i in range(64)]
        write_parquet(pl.DataFrame(rows), base / "train.parquet")
        runs = {}
        for n in (1, 2):
            sft = defaults("sft", max_steps=args.steps, save_steps=args.steps, per_device_train_batch_size=2,
                           gradient_accumulation_steps=2, learning_rate=1e-2, lora={"lora_dropout": 0.0},
                           distributed={"nproc_override": n})
            out = base / f"n{n}"
            t0 = time.perf_counter()
            s = train_sft(trainset=base / "train.parquet", model_dir=base / "tiny", sft_dir=out / "sft",
                          train_log=out / "log.parquet", sft=sft, scratch=out / "scratch", threads=n)
            runs[n] = {"wall_s": round(time.perf_counter() - t0, 1), "train_s": round(s["train_seconds"], 2),
                       "strategy": s["distributed"]["strategy"],
                       "losses": pl.read_parquet(out / "log.parquet")["loss"].to_list()}
    diff = max(abs(a - b) for a, b in zip(runs[1]["losses"], runs[2]["losses"], strict=True))
    result = {"steps": args.steps, "global_batch": 4, "max_abs_loss_diff": diff,
              "wall_ratio_2_over_1": round(runs[2]["wall_s"] / runs[1]["wall_s"], 2),
              "train_ratio_2_over_1": round(runs[2]["train_s"] / runs[1]["train_s"], 2), "runs": runs}
    print("| step | loss, 1 process | loss, 2 processes (DDP) |\n|---|---|---|")
    for i, (a, b) in enumerate(zip(runs[1]["losses"], runs[2]["losses"], strict=True), 1):
        print(f"| {i} | {a:.6f} | {b:.6f} |")
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}))
    print(json.dumps({n: {k: v for k, v in r.items() if k != "losses"} for n, r in runs.items()}))
    return result


if __name__ == "__main__":
    main()
