"""Process helpers shared by the engines and the workflow adapter (no Snakemake, no torch)."""

from __future__ import annotations

import multiprocessing


def in_spawn_reimport() -> bool:
    """True while this process is a child started with ``spawn`` (or ``forkserver``) that is still
    bootstrapping, i.e. re-running the parent's main module as ``__mp_main__`` before its target
    runs (the flag ``multiprocessing`` itself checks before refusing to start processes then)."""
    return bool(getattr(multiprocessing.current_process(), "_inheriting", False))
