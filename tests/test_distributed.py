"""Multi-process SFT (teachfit.training.distributed, train_sft with nproc > 1) on CPU with gloo.

* the launch command and process count for 1, 2 and 8 GPUs (pure);
* 2 DDP processes with the global batch of one process give the same per-step losses and the
  same final LoRA adapter as one process (slow);
* FSDP sharding checked on the model itself: torch's ``fully_shard`` on two gloo processes gives
  DTensor parameters and the same loss as the unsharded model, and ``assert_sharded`` rejects a
  model that FSDP was asked for but that is a plain or DDP-wrapped copy (what the Trainer's
  ``fsdp`` silently gives on CPU);
* a 2-process run killed after a checkpoint resumes to the same adapter (slow).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from teachfit.io import write_parquet
from teachfit.models import materialize
from teachfit.schema import defaults
from teachfit.training.distributed import (
    assert_sharded,
    is_sharded,
    launch_command,
    process_count,
    resolve_strategy,
    trainer_fields,
)
from teachfit.training.sft import train_sft

SFT = defaults("sft", max_steps=6, save_steps=2, per_device_train_batch_size=2, gradient_accumulation_steps=2,
               learning_rate=1e-2, lora={"lora_dropout": 0.0})


@pytest.mark.parametrize("gpus", [1, 2, 8])
def test_launch_command_and_process_count(gpus, tmp_path):
    sft = defaults("sft", method="full", gradient_accumulation_steps=8)
    n = process_count(sft, gpus)
    assert n == gpus
    cmd = launch_command(n, tmp_path / "args.json")
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert cmd[cmd.index("--nproc_per_node") + 1] == str(gpus) and "--standalone" in cmd
    assert cmd[-3:] == ["-m", "teachfit.training.sft_worker", str(tmp_path / "args.json")]
    strategy = resolve_strategy(sft, n, cuda=True)
    assert strategy == ("single" if gpus == 1 else "fsdp")
    fields = trainer_fields(sft, n, strategy, cuda=True)
    if gpus == 1:
        assert fields == {}
    else:
        assert fields["gradient_accumulation_steps"] * gpus == 8  # global batch kept
        assert fields["fsdp"] is True and fields["fsdp_config"]["reshard_after_forward"]
        assert fields["fsdp_config"]["version"] == 2 and fields["fsdp_config"]["activation_checkpointing"]
        assert fields["ddp_backend"] == "nccl"


def test_strategy_choices():
    lora, full = defaults("sft", method="lora"), defaults("sft", method="full")
    assert resolve_strategy(lora, 2, cuda=True) == "ddp"
    assert resolve_strategy(full, 2, cuda=False) == "ddp"  # accelerate has no FSDP on CPU
    with pytest.raises(ValueError, match="sft.distributed.strategy"):
        resolve_strategy({**full, "distributed": {**full["distributed"], "strategy": "fsdp"}}, 2, cuda=False)
    assert process_count({**lora, "distributed": {**lora["distributed"], "nproc_override": 2}}, 1) == 2
    assert process_count(lora, None) == 1
    with pytest.raises(ValueError, match="gradient_accumulation_steps: 3"):
        trainer_fields({**lora, "gradient_accumulation_steps": 3}, 2, "ddp", cuda=False)


# --------------------------------------------------------------------------- FSDP on gloo


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fsdp_rank(rank: int, world: int, port: int, model_dir: str, out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard
    from torch.nn.parallel import DistributedDataParallel
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    ids = torch.arange(2 * 12).reshape(2, 12) % 50 + 3
    plain = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    ref = float(plain(input_ids=ids, labels=ids).loss)
    result = {"plain_sharded": is_sharded(plain)}
    try:
        assert_sharded(DistributedDataParallel(plain), "fsdp")
        result["ddp_rejected"] = False
    except RuntimeError:
        result["ddp_rejected"] = True
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    assert_sharded(model, "fsdp")
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    local = sum(p.to_local().numel() for p in model.parameters())
    result.update(sharded=is_sharded(model), loss=float(loss), ref=ref, local_numel=local,
                  full_numel=sum(p.numel() for p in plain.parameters()))
    Path(out, f"rank{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("models") / "tiny"
    materialize("tiny", {"source": "random", "arch": "llama"}, out)
    return out


@pytest.mark.slow
def test_fully_shard_on_gloo_shards_and_check_rejects_unsharded(tiny, tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_fsdp_rank, args=(2, _free_port(), str(tiny), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        r = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert r["sharded"] and not r["plain_sharded"] and r["ddp_rejected"]
        assert r["local_numel"] < 0.6 * r["full_numel"]  # each process holds about half
        assert r["loss"] == pytest.approx(r["ref"], abs=1e-5)


# --------------------------------------------------------------------------- DDP vs one process


def _trainset(base: Path) -> Path:
    rows = [{"id": f"ex{i}", "instruction": f"what is {i} plus {i} ?",
             "response": f"the answer is {2 * i} ." * (1 + i % 3)} for i in range(32)]
    path = base / "train.parquet"
    write_parquet(pl.DataFrame(rows), path)
    return path


def _kwargs(tiny: Path, trainset: Path, out: Path, nproc: int) -> dict:
    sft = {**SFT, "distributed": {**SFT["distributed"], "nproc_override": nproc}}
    return dict(trainset=str(trainset), model_dir=str(tiny), sft_dir=str(out / "out"),
                train_log=str(out / "log.parquet"), sft=sft, scratch=str(out / "scratch"), threads=1)


def _adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "out" / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("ddp")
    trainset = _trainset(base)
    out = {}
    for n in (1, 2):
        summary = train_sft(**_kwargs(tiny, trainset, base / f"n{n}", n))
        out[n] = {"summary": summary, "dir": base / f"n{n}",
                  "losses": pl.read_parquet(base / f"n{n}" / "log.parquet")["loss"].to_list()}
    out["trainset"] = trainset
    return out


@pytest.mark.slow
def test_two_ddp_processes_match_one(runs):
    one, two = runs[1], runs[2]
    assert two["summary"]["distributed"]["strategy"] == "ddp"
    assert two["summary"]["distributed"]["processes"] == 2
    assert one["summary"]["distributed"]["strategy"] == "single"
    assert one["summary"]["examples_seen"] == two["summary"]["examples_seen"] == 6 * 4
    assert len(one["losses"]) == 6
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)
    recorded = json.loads((two["dir"] / "out" / "sft_config.json").read_text())["distributed"]
    assert recorded["strategy"] == "ddp" and recorded["backend"] == "gloo"
    a, b = _adapter(one["dir"]), _adapter(two["dir"])
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-5, k


@pytest.mark.slow
def test_two_process_run_killed_after_checkpoint_resumes(runs, tiny, tmp_path):
    kwargs = _kwargs(tiny, runs["trainset"], tmp_path, 2)
    code = ("import json, sys\nfrom teachfit.training.sft import train_sft\n"
            "train_sft(**json.loads(sys.argv[1]))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, json.dumps(kwargs)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = tmp_path / "scratch" / "checkpoint-2" / "trainer_state.json"
    deadline = time.time() + 300
    while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # train_sft and torchrun; workers die with torchrun
    proc.wait()
    time.sleep(2)
    assert ckpt.exists() and not (tmp_path / "out").exists()
    summary = train_sft(**kwargs)
    assert summary["resumed_from"] is not None and summary["resumed_from"] >= 2
    a, b = _adapter(runs[2]["dir"]), _adapter(tmp_path)
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-5, k
