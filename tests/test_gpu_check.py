"""benchmarks/gpu_check.py (``make gpu-check``) dry-run on CPU: no GPU is lent to the test machines,
so the script's code paths run here with tiny random models; its speed ratios mean nothing.
``make gpu-check-dryrun`` additionally runs it in a venv with only torch, transformers, peft and
accelerate plus the carried bundle, as on the GPU machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--dry-run", "--json-out",
                           str(out)], check=False, capture_output=True, text=True, timeout=900, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads(out.read_text())
    assert res["dry_run"] is True and res["device"] == "cpu"
    s = res["scoring"]
    assert s["n_pairs"] == 8 and s["max_rel_err"] <= 1e-4 and s["passed"] is None
    assert s["batched_s"] > 0 and s["naive_s"] > 0
    g = res["generation"]
    assert g["identical_outputs"] == g["n_prompts"] and g["batched_tokens"] == g["sequential_tokens"] > 0
    sft = res["sft"]
    assert sft["lora"]["steps_per_s"] > 0 and sft["full"]["steps_per_s"] > 0
    assert 0 < sft["lora"]["trainable_params_m"] < sft["full"]["trainable_params_m"]
    multi = res["multi_gpu"]
    assert multi["processes"] == 2 and multi["backend"] == "gloo"
    assert multi["fsdp"]["sharded"] is True and multi["ddp"]["sharded"] is False
    assert multi["fsdp"]["processes"] == multi["ddp"]["processes"] == 2
    assert multi["fsdp"]["steps_per_s"] > 0 and multi["ddp"]["steps_per_s"] > 0
    for dist in ("torch", "transformers", "peft", "accelerate", "polars", "jsonschema"):
        assert dist in res["imported_distributions"]
    # what the script needs beyond the GPU machine's four packages is in the bundle's wheel list
    wanted = (REPO / "benchmarks" / "gpu_check_requirements.txt").read_text()
    assert "polars==" in wanted and "jsonschema==" in wanted


def test_gpu_check_refuses_to_run_without_a_gpu(tmp_path):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--json-out",
                           str(tmp_path / "x.json")], check=False, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "no CUDA GPU visible" in proc.stderr
