"""One torchrun process of a multi-process SFT job: ``python -m teachfit.training.sft_worker
<args.json>`` (written by :func:`teachfit.training.sft.launch_sft`). Runs
:func:`teachfit.training.sft.run_sft_process`; rank 0 writes its summary to the file the
arguments name."""

from __future__ import annotations

import logging
import sys

from teachfit.io import read_json, write_json
from teachfit.training.distributed import world
from teachfit.training.sft import run_sft_process


def die_with_parent() -> None:
    """Linux: have the kernel SIGKILL this process when its parent (the torchrun agent) dies.
    torchrun starts each worker in a session of its own, so a launcher killed with SIGKILL would
    otherwise leave workers training (and writing into scratch) beside the resubmitted job."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import os
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:  # the parent died before prctl
        os.kill(os.getpid(), signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        raise SystemExit("usage: python -m teachfit.training.sft_worker <args.json>")
    die_with_parent()
    rank, size = world()
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s [rank {rank}/{size}] %(name)s: %(message)s")
    args = read_json(argv[0])
    summary = run_sft_process(**args["kwargs"], resume=args["resume"], threads=args["threads"])
    if rank == 0:
        write_json(summary, args["summary"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
