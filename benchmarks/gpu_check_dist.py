"""One process of the GPU check's multi-process step (benchmarks/gpu_check.py, ``multi_gpu``):

    python -m torch.distributed.run --standalone --nproc_per_node N benchmarks/gpu_check_dist.py \\
        --strategy fsdp --steps 10 --json-out out.json [--dry-run]

Every process builds the same seeded model (gemma-3-270m's architecture, or a tiny gemma3 for
``--dry-run``), wraps it with torch's DDP or FSDP2 (``fully_shard`` on each decoder layer, then
the root: what transformers' Trainer does with ``fsdp_config.version = 2``), and runs ``--steps``
AdamW steps on random tokens (bf16 autocast on CUDA). Rank 0 writes steps/s, tokens/s, whether the
parameters are sharded (DTensor, :func:`teachfit.training.distributed.is_sharded`) and the peak
GPU memory of each rank. NCCL on CUDA (one GPU per process), gloo on CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check import gemma_config, random_causal_lm  # noqa: E402

from teachfit.training.distributed import is_sharded  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import torch
    import torch.distributed as dist

    ap = argparse.ArgumentParser()
    ap.add_argument("--strategy", choices=("ddp", "fsdp"), required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--bundle", default=".gpu-check")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--json-out", required=True)
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not args.dry_run
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if cuda:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    else:
        torch.set_num_threads(1)
    dist.init_process_group("nccl" if cuda else "gloo")
    device = f"cuda:{torch.cuda.current_device()}" if cuda else "cpu"
    config = gemma_config(None if args.dry_run else Path(args.bundle), args.dry_run)
    model = random_causal_lm(config, "float32", device, seed=0).train()
    if args.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
        wrapped = model
    else:
        from torch.nn.parallel import DistributedDataParallel

        wrapped = DistributedDataParallel(model, device_ids=[torch.cuda.current_device()] if cuda else None)
    opt = torch.optim.AdamW(wrapped.parameters(), lr=1e-5)
    g = torch.Generator().manual_seed(rank)
    length = 32 if args.dry_run else args.seq_len

    def step() -> float:
        ids = torch.randint(4, config.vocab_size, (args.batch_size, length), generator=g).to(device)
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
            loss = wrapped(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss)

    step()  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    if cuda:
        torch.cuda.synchronize()
    dist.barrier()
    wall = time.perf_counter() - t0
    peak = torch.tensor([torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0], device=device)
    peaks = [torch.zeros_like(peak) for _ in range(world)]
    dist.all_gather(peaks, peak)
    if rank == 0:
        Path(args.json_out).write_text(json.dumps({
            "strategy": args.strategy, "processes": world, "steps": args.steps,
            "global_batch": args.batch_size * world, "seq_len": length,
            "steps_per_s": round(args.steps / wall, 3),
            "tokens_per_s": round(args.steps * args.batch_size * world * length / wall, 1),
            "sharded": is_sharded(model), "final_loss": loss,
            "peak_gib_per_rank": [round(float(p), 2) for p in peaks]}))
    dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
