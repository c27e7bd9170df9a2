"""Send a job's logging, warnings and progress bars to its Snakemake log file."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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


#: seconds spent per phase in this process (:func:`timed`), e.g. ``{"model_load": 3.1}``
PHASES: dict[str, float] = {}

#: prefix of the one line per job that :func:`job_timing_line` writes (parsed by
#: ``benchmarks/job_overhead.py``)
JOB_TIMING = "JOB_TIMING "


@contextlib.contextmanager
def timed(phase: str) -> Iterator[None]:
    """Add the wall time of the ``with`` block to :data:`PHASES` [phase] (seconds)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        PHASES[phase] = PHASES.get(phase, 0.0) + time.perf_counter() - t0


def process_age() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere): at the start of a
    job function, the interpreter's start, Snakemake's script preamble and the imports."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start_ticks = int(fields[19])  # field 22 of stat(5), counted after the ")" of comm
        with open("/proc/uptime", encoding="ascii") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


def job_timing_line(rule: str, startup_s: float | None, run_s: float) -> str:
    """The job's timing record: ``JOB_TIMING {json}`` with ``rule``, ``startup_s`` (process start,
    Snakemake preamble and imports before the job function ran), ``model_load_s`` (every
    :func:`timed` ``model_load`` block) and ``run_s`` (the job function, model loading included)."""
    rec: dict[str, Any] = {"rule": rule, "startup_s": None if startup_s is None else round(startup_s, 3),
                           "model_load_s": round(PHASES.get("model_load", 0.0), 3), "run_s": round(run_s, 3)}
    return JOB_TIMING + json.dumps(rec, sort_keys=True)


def job_times(results_dir: str | Path = "results") -> Any:
    """Where a run's job time went, per rule: a polars DataFrame with ``rule``, ``jobs``,
    ``wall_s`` (sum of the ``s`` column of ``<results>/benchmarks/<rule>/**.tsv``: Snakemake's
    wall time of each job), and from the :data:`JOB_TIMING` line of each job log
    (``<results>/logs/<rule>/**.log``): ``startup_s`` (interpreter, Snakemake preamble, imports),
    ``model_load_s``, ``compute_s`` (the job function minus model loading) and ``other_s`` (wall
    minus those three: Snakemake's own work around the script, e.g. writing the script copy
    and checking outputs). Rules without timing lines (shell rules, jobs of an older run)
    have null parts. Sorted by ``wall_s``, largest first; a ``TOTAL`` row last (its parts sum
    the rules that have them).

    Raises FileNotFoundError when ``<results>/benchmarks`` does not exist.
    """
    import polars as pl

    root = Path(results_dir)
    bench = root / "benchmarks"
    if not bench.is_dir():
        raise FileNotFoundError(f"{bench}: no benchmark files (run the workflow first)")
    rows: dict[str, dict[str, Any]] = {}
    for tsv in sorted(bench.glob("*/**/*.tsv")):
        rule = tsv.relative_to(bench).parts[0]
        lines = tsv.read_text(encoding="utf-8").splitlines()
        if len(lines) < 2:
            continue
        r = rows.setdefault(rule, {"rule": rule, "jobs": 0, "wall_s": 0.0, "timed": 0,
                                   "startup_s": 0.0, "model_load_s": 0.0, "run_s": 0.0})
        r["jobs"] += 1
        r["wall_s"] += float(lines[-1].split("\t")[0])
    for log in sorted((root / "logs").glob("*/**/*.log")):
        rule = log.relative_to(root / "logs").parts[0]
        if rule not in rows:
            continue
        rec = None
        with open(log, encoding="utf-8", errors="replace") as f:
            for line in f:
                i = line.find(JOB_TIMING)
                if i >= 0:
                    rec = json.loads(line[i + len(JOB_TIMING):])
        if rec is None:
            continue
        r = rows[rule]
        r["timed"] += 1
        r["startup_s"] += rec["startup_s"] or 0.0
        r["model_load_s"] += rec["model_load_s"]
        r["run_s"] += rec["run_s"]
    out = []
    for r in rows.values():
        timed_all = r["timed"] == r["jobs"]
        compute = r["run_s"] - r["model_load_s"]
        out.append({"rule": r["rule"], "jobs": r["jobs"], "wall_s": r["wall_s"],
                    "startup_s": r["startup_s"] if timed_all else None,
                    "model_load_s": r["model_load_s"] if timed_all else None,
                    "compute_s": compute if timed_all else None,
                    "other_s": r["wall_s"] - r["startup_s"] - r["run_s"] if timed_all else None})
    schema = {"rule": pl.String, "jobs": pl.Int64, "wall_s": pl.Float64, "startup_s": pl.Float64,
              "model_load_s": pl.Float64, "compute_s": pl.Float64, "other_s": pl.Float64}
    df = pl.DataFrame(out, schema=schema).sort("wall_s", descending=True)
    total = df.select(pl.lit("TOTAL").alias("rule"), *[pl.col(c).sum() for c in list(schema)[1:]])
    return pl.concat([df, total]).with_columns(pl.col(pl.Float64).round(1))
