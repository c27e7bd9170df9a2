"""Helpers of the ``vllm`` test modules (``make test-vllm``): the model folder and the measured
numbers they keep next to the test log."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: ``pytestmark`` of every vLLM test module: the ``vllm`` marker, skipped unless ``make test-vllm``
#: set TEACHFIT_VLLM=1
VLLM_MARKS = [
    pytest.mark.vllm,
    pytest.mark.skipif(os.environ.get("TEACHFIT_VLLM") != "1",
                       reason="vLLM CPU tests: run `make test-vllm` (sets TEACHFIT_VLLM=1)"),
]


def smollm2_dir() -> Path:
    """``$TEACHFIT_SMOLLM2`` or ``results/models/smollm2``; a failure (not a skip) when missing."""
    path = Path(os.environ.get("TEACHFIT_SMOLLM2", REPO / "results" / "models" / "smollm2"))
    if not (path / "model.safetensors").is_file():
        pytest.fail(f"{path}: no materialized SmolLM2 (make test-vllm materializes results/models/smollm2)")
    return path


def record(name: str, value: object) -> None:
    """Print a measured number and, under ``make test-vllm`` (``TEACHFIT_VLLM_LOG`` set), append it
    to ``vllm_measurements.jsonl`` next to the log (the numbers in docs/engines.md)."""
    print(f"{name}: {value}")
    log = os.environ.get("TEACHFIT_VLLM_LOG")
    if log:
        with (Path(log).parent / "vllm_measurements.jsonl").open("a") as fh:
            fh.write(json.dumps({"name": name, "value": value}) + "\n")
