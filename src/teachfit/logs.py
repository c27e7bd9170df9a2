"""Send a job's logging, warnings and progress bars to its Snakemake log file."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path


def log_to(path: str | Path | None, threads: int | None = None) -> logging.Logger:
    """Route logging + stderr (tqdm progress bars, warnings) to ``path``; set thread counts
    (:func:`set_threads`) when ``threads`` is given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        stream = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives for the job
        sys.stderr = stream
        handler: logging.Handler = logging.StreamHandler(stream)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.captureWarnings(True)
    if threads:
        set_threads(int(threads))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return logging.getLogger("teachfit")


def set_threads(threads: int) -> None:
    """Limit the job's compute threads to ``threads`` (Snakemake's ``threads`` of the job).

    Sets ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` (read by torch and numpy's BLAS when they are
    first imported) and, when torch is already imported, ``torch.set_num_threads``. torch is not
    imported here: a job that never needs it (tables, figures) does not pay its import time.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
