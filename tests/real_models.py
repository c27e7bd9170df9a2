"""Where the real small models of the default run are materialised (``results/models/<alias>`` of
this checkout, or ``$TEACHFIT_MODELS_DIR/<alias>``); tests that need them skip when absent."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def real_model_dir(alias: str) -> Path | None:
    """``results/models/<alias>`` (or under ``$TEACHFIT_MODELS_DIR``) when it holds a model, else None."""
    base = Path(os.environ.get("TEACHFIT_MODELS_DIR", ROOT / "results" / "models"))
    path = base / alias
    return path if (path / "config.json").is_file() and (path / "tokenizer_config.json").is_file() else None
