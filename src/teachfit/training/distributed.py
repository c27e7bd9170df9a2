"""Multi-process SFT on one node: how many processes, which strategy, the launch command, and the
check that FSDP really sharded the model.

A ``train_sft`` job with N > 1 GPUs (``nproc``, from :func:`teachfit.workflow.resources.job_gpus`
through the rule's params; or ``sft.distributed.nproc_override``) relaunches itself with
``python -m torch.distributed.run --standalone --nproc_per_node N -m teachfit.training.sft_worker
<args.json>`` (torchrun, one process per GPU); each process runs :func:`teachfit.training.sft.
train_sft` with ``WORLD_SIZE`` set, and rank 0 alone writes the declared outputs.

* LoRA: DDP (each process holds the whole model; gradients all-reduced).
* Full fine-tuning on CUDA: FSDP through transformers' ``fsdp`` / ``fsdp_config`` (FSDP2, full
  shard, each decoder layer auto-wrapped, activation checkpointing, full state dict saved by rank
  0); :func:`assert_sharded` fails the job when the wrapped model holds no DTensor parameter.
  On CPU accelerate runs the Trainer's FSDP request as DDP (MULTI_CPU, plain parameters), so
  ``auto`` picks DDP there and an explicit ``fsdp`` on CPU is an error.
* The global batch (``per_device_train_batch_size x gradient_accumulation_steps``) is the
  config's: each of N processes accumulates ``gradient_accumulation_steps / N`` micro batches.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

WORKER_MODULE = "teachfit.training.sft_worker"
STRATEGIES = ("auto", "ddp", "fsdp")


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process from torchrun's environment (``(0, 1)`` outside)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def process_count(sft: Mapping[str, Any], nproc: int | None) -> int:
    """Processes of an SFT job: ``sft.distributed.nproc_override`` when set, else the job's GPUs
    ``nproc`` (``None`` or < 1 = one process)."""
    override = sft.get("distributed", {}).get("nproc_override")
    if override is not None:
        return int(override)
    return max(1, int(nproc or 1))


def resolve_strategy(sft: Mapping[str, Any], n: int, cuda: bool) -> str:
    """``single`` (n = 1), ``ddp`` or ``fsdp``. ``auto``: FSDP for method full on CUDA, DDP
    otherwise. Raises ``ValueError`` naming ``sft.distributed.strategy`` for fsdp without CUDA
    (accelerate would silently run DDP)."""
    if n <= 1:
        return "single"
    strategy = sft.get("distributed", {}).get("strategy", "auto")
    if strategy not in STRATEGIES:
        raise ValueError(f"sft.distributed.strategy: {strategy!r} not allowed; allowed: {', '.join(STRATEGIES)}")
    if strategy == "auto":
        return "fsdp" if sft["method"] == "full" and cuda else "ddp"
    if strategy == "fsdp" and not cuda:
        raise ValueError("sft.distributed.strategy: fsdp needs CUDA GPUs (on CPU accelerate runs the "
                         "Trainer's FSDP as DDP); use ddp or auto")
    return strategy


def per_process_accumulation(sft: Mapping[str, Any], n: int) -> int:
    """``gradient_accumulation_steps / n``, keeping the global batch; ``ValueError`` naming
    ``sft.gradient_accumulation_steps`` when it does not divide."""
    accum = int(sft["gradient_accumulation_steps"])
    if accum % n:
        raise ValueError(f"sft.gradient_accumulation_steps: {accum} does not split over {n} processes; "
                         f"use a multiple of {n} so the global batch stays per_device x accumulation")
    return accum // n


def trainer_fields(sft: Mapping[str, Any], n: int, strategy: str, cuda: bool) -> dict[str, Any]:
    """``SFTConfig`` fields of one of ``n`` processes (none for ``single``): accumulation per
    process, the DDP backend (gloo on CPU, nccl on CUDA) and, for fsdp, transformers' ``fsdp`` /
    ``fsdp_config`` from ``sft.distributed.fsdp`` (activation checkpointing replaces
    ``gradient_checkpointing``)."""
    if strategy == "single":
        return {}
    out: dict[str, Any] = {"gradient_accumulation_steps": per_process_accumulation(sft, n),
                           "ddp_backend": "nccl" if cuda else "gloo",
                           "ddp_find_unused_parameters": False}
    if strategy == "fsdp":
        opts = sft["distributed"]["fsdp"]
        wrap = ({"auto_wrap_policy": "SIZE_BASED_WRAP", "min_num_params": int(opts["min_num_params"])}
                if opts["min_num_params"] else {"auto_wrap_policy": "TRANSFORMER_BASED_WRAP"})
        out.update(
            fsdp=True,
            fsdp_config={"version": 2, "activation_checkpointing": bool(opts["activation_checkpointing"]),
                         "state_dict_type": "FULL_STATE_DICT", "cpu_ram_efficient_loading": False,
                         "reshard_after_forward": opts["sharding"] == "full_shard", **wrap},
            gradient_checkpointing=False,
        )
    return out


def launch_command(n: int, args_file: str | Path, module: str = WORKER_MODULE) -> list[str]:
    """torchrun on one node with ``n`` processes running ``python -m module args_file``."""
    if n < 1:
        raise ValueError(f"process count must be >= 1, got {n}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(n),
            "-m", module, str(args_file)]


def is_sharded(model: Any) -> bool:
    """True when ``model`` holds a DTensor parameter (FSDP2 ``fully_shard``) or is / contains an
    FSDP1 ``FullyShardedDataParallel`` module."""
    from torch.distributed.fsdp import FullyShardedDataParallel
    from torch.distributed.tensor import DTensor

    if any(isinstance(p, DTensor) for p in model.parameters()):
        return True
    return any(isinstance(m, FullyShardedDataParallel) for m in model.modules())


def assert_sharded(model: Any, strategy: str) -> None:
    """Raise ``RuntimeError`` when ``strategy`` is fsdp and ``model`` (as wrapped for training)
    is not sharded: FSDP was asked for and something ran DDP or a single copy instead."""
    if strategy == "fsdp" and not is_sharded(model):
        raise RuntimeError(f"FSDP was requested but the model is not sharded ({type(model).__name__} "
                           "holds no DTensor parameter and no FSDP module); refusing to train unsharded")


def sharding_check_callback(strategy: str) -> Any:
    """A ``TrainerCallback`` running :func:`assert_sharded` on the wrapped model at train begin."""
    from transformers import TrainerCallback

    class ShardingCheck(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            assert_sharded(model, strategy)

    return ShardingCheck()
