"""Run untrusted, model-written Python (AutoIF verification functions) in a contained child.

Every call starts a fresh interpreter (``python -I -S``: isolated mode, no
site-packages) in a new session, with layers of containment:

OS level (the hard boundary)
    * empty environment (``env={}``): no secret inherited from the parent;
    * a fresh temporary working directory, deleted afterwards;
    * ``resource`` limits set before any untrusted code runs: ``RLIMIT_AS``
      (memory), ``RLIMIT_CPU``, ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``,
      ``RLIMIT_CORE`` = 0 and ``RLIMIT_NPROC`` (fork bombs; the kernel ignores
      it for root, hence the next point);
    * when the parent runs as root, the child drops to the ``nobody`` user
      before running the code (then ``RLIMIT_NPROC`` applies and the file
      system permissions protect the host's files, including
      ``/proc/<parent>/environ``);
    * a new network namespace (``unshare -n``; ``unshare -rn`` for non-root
      users with user namespaces) when the ``unshare`` tool works here: the
      child then has no network interface but a down loopback;
    * a wall-clock limit, after which the whole process group (and every
      descendant psutil can still see) is killed with SIGKILL.

In-process (best effort, defence in depth)
    * a ``sys.addaudithook`` hook installed before the untrusted code is
      compiled into a function: it refuses sockets, process creation
      (fork/exec/spawn/system/subprocess/kill), ctypes, importing
      socket/subprocess/ctypes/gc/…, opening files for writing outside the temp
      dir, reading files outside the temp dir and the standard library, and
      removing/renaming/linking/chmod-ing paths outside the temp dir. Any call
      during which the hook refused something counts as a failure with reason
      ``blocked``, even if the code caught the exception.
    * a per-call timer (``setitimer``) so a pure-Python infinite loop fails that
      call only.

Audit hooks are not a security boundary on their own (CPython documents
this); they make the common failure modes cheap and visible, the OS layers
contain the rest. The *result* a hostile function reports is not trustworthy
(it runs in the same process as the reporting code); containment is.

Results come back as JSON lines in a file in the temp dir (bounded by
``RLIMIT_FSIZE``), never through a pipe the child could flood.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from teachfit.settings import from_dict as settings_from_dict

log = logging.getLogger(__name__)

#: Failure reasons a :class:`SandboxResult` can carry.
REASONS = (
    "timeout",          # per-call timer, CPU limit or wall-clock kill
    "memory",           # MemoryError inside the child (RLIMIT_AS)
    "blocked",          # the audit hook refused an operation during the call
    "error",            # the function raised
    "syntax",           # the code does not compile
    "missing_function",  # no callable of that name after running the code
    "unserializable",   # the return value is not JSON-serializable
    "output_too_large",  # the JSON-encoded value exceeds max_output_bytes
    "killed",           # the child died from a signal we did not send (e.g. OOM killer)
    "crash",            # the child exited without reporting (os._exit, segfault, start-up failure)
)

NETWORK_NAMESPACE_MODES = ("auto", "require", "off")

DEFAULT_PRELOAD = (
    "re", "json", "string", "math", "collections", "itertools", "functools",
    "unicodedata", "datetime", "statistics", "textwrap", "difflib", "random",
    "operator", "typing", "fractions", "decimal", "heapq", "bisect", "copy", "enum",
    "shutil", "pathlib", "glob", "fnmatch", "csv", "html", "base64", "hashlib", "struct",
    "calendar", "numbers",
)


class SandboxError(RuntimeError):
    """The sandbox itself cannot be set up (not a failure of the untrusted code)."""


@dataclass(frozen=True)
class SandboxResult:
    """One call's outcome: ``ok`` and the JSON ``value``, or ``reason`` (:data:`REASONS`) and
    ``error``; ``seconds`` of wall time; operations the audit hook refused (``blocked``)."""

    ok: bool
    value: Any = None
    error: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    blocked: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["blocked"] = list(self.blocked)
        return d


@dataclass
class SandboxSettings:
    """Limits of the sandboxed child. ``timeout_s`` / ``memory_mb`` are the primitive's own safety
    defaults for direct use (:func:`run_untrusted`); AutoIF always passes its configured
    ``evolver.scenarios.autoif.timeout_s`` / ``memory_mb``."""

    timeout_s: float = field(default=2.0, metadata={"help": "CPU/wall seconds per function call"})
    memory_mb: int = field(default=256, metadata={"help": "address-space limit (RLIMIT_AS) in MiB"})
    max_file_mb: int = field(default=16, metadata={"help": "largest file the child may write (RLIMIT_FSIZE)"})
    max_open_files: int = field(default=64, metadata={"help": "RLIMIT_NOFILE"})
    max_procs: int = field(
        default=0,
        metadata={"help": "RLIMIT_NPROC for the child's user (0: no new processes); ignored for root"},
    )
    max_output_bytes: int = field(default=1_000_000, metadata={"help": "largest JSON-encoded return value"})
    startup_s: float = field(
        default=5.0, metadata={"help": "wall-clock slack for interpreter start-up on a busy machine"}
    )
    network_namespace: str = field(
        default="auto",
        metadata={"help": "unshare -n layer", "choices": NETWORK_NAMESPACE_MODES},
    )
    drop_privileges: bool = field(
        default=True, metadata={"help": "when running as root, run the code as user nobody"}
    )
    audit_hooks: bool = field(
        default=True, metadata={"help": "in-process audit hook layer (turn off only to test the OS layers)"}
    )
    preload_modules: tuple[str, ...] = field(
        default=DEFAULT_PRELOAD,
        metadata={"help": "stdlib modules imported before privileges drop (the code may import them)"},
    )
    workers: int = field(default=2, metadata={"help": "parallel sandbox processes in run_many"})
    tmp_root: str | None = field(default=None, metadata={"help": "where temp dirs go (default: $TMPDIR)"})

    def __post_init__(self) -> None:
        if self.timeout_s <= 0:
            raise ValueError(f"sandbox.timeout_s must be > 0, got {self.timeout_s}")
        if self.memory_mb < 32:
            raise ValueError(f"sandbox.memory_mb must be >= 32 (the interpreter needs it), got {self.memory_mb}")
        if self.network_namespace not in NETWORK_NAMESPACE_MODES:
            raise ValueError(
                f"sandbox.network_namespace: {self.network_namespace!r} not allowed; "
                f"allowed: {', '.join(NETWORK_NAMESPACE_MODES)}"
            )
        if self.workers < 1:
            raise ValueError(f"sandbox.workers must be >= 1, got {self.workers}")
        if self.max_procs < 0 or self.max_open_files < 8 or self.max_file_mb < 1:
            raise ValueError("sandbox: max_procs >= 0, max_open_files >= 8, max_file_mb >= 1 required")
        self.preload_modules = tuple(self.preload_modules)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SandboxSettings:
        return settings_from_dict(cls, d, "sandbox", allowed_label="allowed")


@dataclass(frozen=True)
class SandboxJob:
    """One piece of code and the argument lists to call ``func_name`` with."""

    code: str
    func_name: str
    calls: tuple[tuple[Any, ...], ...]


# --------------------------------------------------------------------------- child side

# The child program is the module sandbox_child.py, run as ``python -I -S <file> <tmpdir>``
# (a file, not ``-c``: linters, coverage and the syntax tree see it). Stdlib only.
_CHILD = Path(__file__).resolve().with_name("sandbox_child.py")


# --------------------------------------------------------------------------- parent side


@lru_cache(maxsize=4)
def network_namespace_prefix(mode: str = "auto") -> tuple[str, ...]:
    """The command prefix that puts the child in a fresh network namespace, or ``()``.

    Probed once per process: ``unshare -n`` as root, ``unshare -rn`` otherwise
    (needs unprivileged user namespaces). ``require`` raises when neither works.
    """
    if mode == "off":
        return ()
    exe = shutil.which("unshare")
    candidates = []
    if exe:
        candidates = [(exe, "-n")] if os.geteuid() == 0 else [(exe, "-rn")]
    for prefix in candidates:
        try:
            rc = subprocess.run(
                [*prefix, "true"], env={}, stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10, check=False,
            ).returncode
        except (OSError, subprocess.TimeoutExpired):
            rc = -1
        if rc == 0:
            return prefix
    if mode == "require":
        raise SandboxError(
            "sandbox.network_namespace=require but `unshare -n`/`unshare -rn` does not work here"
        )
    log.info("sandbox: no network namespace available (unshare missing or not permitted)")
    return ()


def _nobody() -> tuple[int, int]:
    import pwd

    try:
        pw = pwd.getpwnam("nobody")
        return pw.pw_uid, pw.pw_gid
    except KeyError:
        return 65534, 65534


def _wait_no_reap(pid: int, deadline: float) -> bool:
    """Wait until ``pid`` exits or ``deadline`` passes, leaving it unreaped; True if it exited."""
    delay = 0.002
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG)
        except ChildProcessError:
            return True
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.02)


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the child's process group and every descendant still visible."""
    import psutil

    try:
        descendants = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:  # the process is already gone
        descendants = []
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    for child in descendants:
        with contextlib.suppress(psutil.Error):
            child.kill()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:  # pragma: no cover - unkillable (D state)
        log.warning("sandbox: child %d did not die after SIGKILL", proc.pid)


def _read_capped(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(limit)
    except OSError:
        return b""


def run_batch(code: str, func_name: str, calls: Sequence[Sequence[Any]],
              settings: SandboxSettings | None = None) -> list[SandboxResult]:
    """Call ``func_name(*args)`` for each ``args`` in ``calls`` in one sandboxed child.

    The code runs once; each call gets ``timeout_s`` on its own timer; the whole
    child gets ``timeout_s * len(calls) + startup_s`` of wall time. Calls the
    child never reported (it was killed or exited) fail with the cause
    (``timeout``, ``killed`` or ``crash``).
    """
    settings = settings or SandboxSettings()
    calls = [list(a) for a in calls]
    if not calls:
        return []
    netns = network_namespace_prefix(settings.network_namespace)
    tmp = Path(tempfile.mkdtemp(prefix="teachfit-sbx-", dir=settings.tmp_root))
    try:
        uid = gid = None
        if settings.drop_privileges and os.geteuid() == 0:
            uid, gid = _nobody()
        wall = settings.timeout_s * len(calls) + settings.startup_s
        payload = {
            "code": code,
            "func": func_name,
            "calls": calls,
            "timeout": settings.timeout_s,
            "cpu_s": int(settings.timeout_s * len(calls)) + 2,
            "mem": settings.memory_mb * 1024 * 1024,
            "fsize": settings.max_file_mb * 1024 * 1024,
            "nofile": settings.max_open_files,
            "nproc": settings.max_procs,
            "max_out": settings.max_output_bytes,
            "uid": uid,
            "gid": gid,
            "hooks": settings.audit_hooks,
            "preload": list(settings.preload_modules),
        }
        try:
            blob = json.dumps(payload)
        except TypeError as exc:
            raise TypeError(f"sandbox: call arguments must be JSON-serializable: {exc}") from exc
        (tmp / "payload.json").write_text(blob, encoding="utf-8")
        if uid is not None:
            os.chown(tmp, uid, gid)
        os.chmod(tmp, 0o700)
        cmd = [*netns, sys.executable, "-I", "-S", str(_CHILD), str(tmp)]
        t0 = time.monotonic()
        timed_out = False
        with open(tmp / "stdout.txt", "wb") as out, open(tmp / "stderr.txt", "wb") as err:
            proc = subprocess.Popen(
                cmd, cwd=tmp, env={}, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True, close_fds=True,
            )
            timed_out = not _wait_no_reap(proc.pid, t0 + wall)
            # Kill the group in every case (an exited leader may leave children behind).
            # The leader is still an unreaped zombie here, so its pid -- the group id --
            # cannot have been reused by an unrelated process.
            _kill_tree(proc)
        elapsed = time.monotonic() - t0
        raw = _read_capped(tmp / "result.jsonl", settings.max_file_mb * 1024 * 1024 + 1)
        stderr_tail = _read_capped(tmp / "stderr.txt", 1 << 20)[-2000:].decode("utf-8", "replace")
        return _collect(raw, len(calls), proc.returncode, timed_out, elapsed, stderr_tail, wall)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _collect(raw: bytes, n: int, returncode: int | None, timed_out: bool, elapsed: float,
             stderr_tail: str, wall: float) -> list[SandboxResult]:
    got: dict[int, SandboxResult] = {}
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            rec = json.loads(line)
            i = int(rec["i"])
        except (ValueError, KeyError, TypeError):
            continue
        if not 0 <= i < n or i in got:
            continue
        ok = rec.get("ok") is True
        reason = None if ok else str(rec.get("reason") or "crash")
        if reason is not None and reason not in REASONS:
            reason = "crash"
        got[i] = SandboxResult(
            ok=ok,
            value=rec.get("value") if ok else None,
            error=None if ok else str(rec.get("error"))[:1000],
            reason=reason,
            seconds=float(rec.get("seconds") or 0.0),
            blocked=tuple(str(b) for b in rec.get("blocked") or ()),
        )
    if len(got) == n:
        return [got[i] for i in range(n)]
    if timed_out:
        reason, msg = "timeout", f"wall-clock limit {wall:.1f}s reached; process group killed"
    elif returncode is not None and returncode == -signal.SIGXCPU:
        reason, msg = "timeout", "CPU time limit (RLIMIT_CPU) reached"
    elif returncode is not None and returncode < 0:
        reason, msg = "killed", f"child died from signal {-returncode}"
    else:
        reason, msg = "crash", f"child exited with code {returncode} before reporting"
    if stderr_tail.strip():
        msg += f"; stderr: {stderr_tail.strip()[-500:]}"
    return [got.get(i) or SandboxResult(ok=False, error=msg, reason=reason, seconds=elapsed)
            for i in range(n)]


def run_untrusted(code: str, func_name: str, args: Sequence[Any], timeout_s: float = 2.0,
                  memory_mb: int = 256, settings: SandboxSettings | None = None) -> SandboxResult:
    """Run ``func_name(*args)`` from ``code`` in a fresh sandboxed child; see the module doc."""
    if settings is None:
        settings = SandboxSettings(timeout_s=timeout_s, memory_mb=memory_mb)
    return run_batch(code, func_name, [list(args)], settings)[0]


def run_many(jobs: Sequence[SandboxJob], settings: SandboxSettings | None = None,
             desc: str = "sandbox") -> list[list[SandboxResult]]:
    """Run many jobs (one child each) on ``settings.workers`` parallel children, in order."""
    from tqdm.auto import tqdm

    settings = settings or SandboxSettings()
    if not jobs:
        return []
    network_namespace_prefix(settings.network_namespace)  # probe once, before the threads
    results: list[list[SandboxResult]] = [[] for _ in jobs]
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        futures = {
            pool.submit(run_batch, job.code, job.func_name, job.calls, settings): k
            for k, job in enumerate(jobs)
        }
        from concurrent.futures import as_completed

        for fut in tqdm(as_completed(futures), total=len(futures), desc=desc, leave=False):
            results[futures[fut]] = fut.result()
    return results
