"""Hooks for tf_arith: load the committed JSONL splits (works from any cwd, offline)."""

from __future__ import annotations

from pathlib import Path

from teachfit.evaluation.lm_eval import load_jsonl_splits

HERE = Path(__file__).resolve().parent


def load_data(**_metadata):
    """DatasetDict with splits ``train`` (few-shot pool) and ``test``."""
    return load_jsonl_splits(
        {"train": HERE / "tf_arith_train.jsonl", "test": HERE / "tf_arith_test.jsonl"}
    )
