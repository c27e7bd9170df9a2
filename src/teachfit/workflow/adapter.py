"""The one adapter between a Snakemake job and the package function its rule runs.

Every ``scripts/<rule>.py`` is two lines::

    from teachfit.workflow.adapter import run
    from teachfit.studies.teacher import compute_car

    run(compute_car, snakemake)  # noqa: F821

:func:`run` sends logging to the job's ``log`` file, then calls the function with the
job's named ``input``, ``output`` and ``params`` as keyword arguments (and ``threads``
when the function takes it). A rule's keys therefore *are* the function's parameter
names: a key the function does not take, a parameter no key supplies, an unnamed
(positional) input or output, or one key used twice raises :class:`WiringError`
before any work is done. Tests call the same function with the same keywords.

Spawn safety: Snakemake runs a script as the main module (``python <tmp copy of the script>``
whose preamble unpickles the ``snakemake`` object) and sets the module's ``__file__`` to the
*original* script. A child process started with ``spawn`` (vLLM's engine process always is, on
CPU) re-runs the main module's ``__file__`` as ``__mp_main__``: the original two lines, without
the preamble, so the child dies with ``NameError: name 'snakemake' is not defined`` (or, in a
script that had the object, would run the job again and start engines during bootstrapping).
No ``if __name__ == "__main__":`` guard can sit in a two-line script, so :func:`run` hides the
main module's ``__file__`` while the job runs: a spawned child then imports nothing from the
script (job functions and engine targets are importable by their module names) and goes
straight to its target. Tested with a real Snakemake job that spawns a child
(``tests/test_adapter.py``) and with a vLLM generation job (``tests/test_vllm.py``).
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from teachfit.logs import PHASES, job_timing_line, log_to, process_age
from teachfit.processes import in_spawn_reimport  # noqa: F401  (re-exported for scripts and tests)


class WiringError(TypeError):
    """A rule's input / output / params keys do not match its function's parameters."""


def _named(items: Any, what: str, rule: str) -> dict[str, Any]:
    """Named entries of a Snakemake Namedlist as plain str / list[str] / values."""
    out: dict[str, Any] = {}
    names = dict(items._names) if hasattr(items, "_names") else {}
    covered = 0
    for name, (start, end) in names.items():
        if end is None:  # one item (a params value may itself be a list or dict)
            value = items[start]
            out[name] = value if what == "params" else str(value)
            covered += 1
        else:  # an input function's list (possibly empty)
            out[name] = [v if what == "params" else str(v) for v in items[start:end]]
            covered += end - start
    if what != "params" and covered != len(items):
        raise WiringError(f"rule {rule}: every {what} must be named (found {len(items) - covered} unnamed)")
    return out


def job_kwargs(job: Any) -> dict[str, Any]:
    """``{key: value}`` of a Snakemake job's named input, output and params (keys unique)."""
    rule = getattr(job, "rule", "?")
    kwargs: dict[str, Any] = {}
    for what in ("input", "output", "params"):
        for key, value in _named(getattr(job, what), what, rule).items():
            if key in kwargs:
                raise WiringError(f"rule {rule}: key {key!r} is used twice (input/output/params must differ)")
            kwargs[key] = value
    return kwargs


def bind(fn: Callable[..., Any], kwargs: Mapping[str, Any], threads: int | None, rule: str = "?") -> dict[str, Any]:
    """Check ``kwargs`` against ``fn``'s signature; add ``threads`` when ``fn`` takes it."""
    sig = inspect.signature(fn)
    params = sig.parameters
    call = dict(kwargs)
    if "threads" in params and "threads" not in call and threads is not None:
        call["threads"] = int(threads)
    extra = sorted(set(call) - set(params))
    missing = sorted(n for n, p in params.items()
                     if p.default is inspect.Parameter.empty and n not in call
                     and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    if extra or missing:
        where = f"{fn.__module__}.{fn.__qualname__}"
        raise WiringError(
            f"rule {rule} -> {where}: "
            + (f"keys {extra} are not parameters of the function; " if extra else "")
            + (f"parameters {missing} get no input/output/params key" if missing else "")
        )
    return call


@contextlib.contextmanager
def main_not_reimported() -> Iterator[None]:
    """While active, children started with ``spawn`` do not re-run the main script:
    ``multiprocessing`` re-imports ``__main__`` from its ``__file__`` (or its ``__spec__`` name,
    which a script has not), so the attribute is removed and restored afterwards."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None or "__file__" not in vars(main):
        yield
        return
    saved = main.__file__
    del main.__file__
    try:
        yield
    finally:
        main.__file__ = saved


def run(fn: Callable[..., Any], smk: Any) -> Any:
    """Run ``fn`` for the Snakemake job ``smk`` (the ``snakemake`` object of a script) and
    return its result; spawned children of the job do not re-run the script (see the module
    docstring, :func:`main_not_reimported`). Ends the job log with its timing line
    (:func:`teachfit.logs.job_timing_line`: startup, model loading, run time)."""
    startup = process_age()
    log_path = smk.log["log"] if "log" in dict(getattr(smk.log, "_names", {})) else None
    log_to(log_path, smk.threads)
    rule = getattr(smk, "rule", "?")
    kwargs = bind(fn, job_kwargs(smk), smk.threads, rule)
    PHASES.clear()
    t0 = time.perf_counter()
    with main_not_reimported():
        result = fn(**kwargs)
    # where the job's time went (benchmarks/job_overhead.py sums these over a run)
    logging.getLogger("teachfit.workflow").info(job_timing_line(rule, startup, time.perf_counter() - t0))
    return result
