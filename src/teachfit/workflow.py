"""The one adapter between a Snakemake job and the package function its rule runs.

Every ``scripts/<rule>.py`` is two lines::

    from teachfit.workflow import run
    from teachfit.studies.teacher import compute_car

    run(compute_car, snakemake)  # noqa: F821

:func:`run` sends logging to the job's ``log`` file, then calls the function with the
job's named ``input``, ``output`` and ``params`` as keyword arguments (and ``threads``
when the function takes it). A rule's keys therefore *are* the function's parameter
names: a key the function does not take, a parameter no key supplies, an unnamed
(positional) input or output, or one key used twice raises :class:`WiringError`
before any work is done. Tests call the same function with the same keywords.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any

from teachfit.logs import log_to


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


def run(fn: Callable[..., Any], smk: Any) -> Any:
    """Run ``fn`` for the Snakemake job ``smk`` (the ``snakemake`` object of a script)."""
    log_path = smk.log["log"] if "log" in dict(getattr(smk.log, "_names", {})) else None
    log_to(log_path, smk.threads)
    rule = getattr(smk, "rule", "?")
    return fn(**bind(fn, job_kwargs(smk), smk.threads, rule))
