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

# Runs inside the child as ``python -I -S -c _RUNNER <tmpdir>``. Stdlib only.
_RUNNER = r'''
import builtins, json, os, resource, signal, sys, time

def _main():
    tmp = sys.argv[1]
    with open(os.path.join(tmp, "payload.json"), encoding="utf-8") as fh:
        p = json.load(fh)
    res_fd = os.open(os.path.join(tmp, "result.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    _dumps, _write = json.dumps, os.write

    def emit(rec):
        data = (_dumps(rec) + "\n").encode("utf-8")
        while data:
            data = data[_write(res_fd, data):]

    def setlim(res, value):
        soft, hard = resource.getrlimit(res)
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass

    for name in p["preload"]:
        try:
            __import__(name)
        except Exception:
            pass
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over-size writes fail with EFBIG instead
    setlim(resource.RLIMIT_CORE, 0)
    setlim(resource.RLIMIT_FSIZE, p["fsize"])
    setlim(resource.RLIMIT_NOFILE, p["nofile"])
    # soft < hard: SIGXCPU (-> reported as "timeout") at the soft limit; SIGKILL one second
    # later only if the code catches SIGXCPU (with soft == hard the kernel kills at once)
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (p["cpu_s"], p["cpu_s"] + 1))
    except (ValueError, OSError):
        pass
    setlim(resource.RLIMIT_NPROC, p["nproc"])  # the kernel ignores it for real root
    if p["uid"] is not None:
        os.setgroups([])
        os.setgid(p["gid"])
        os.setuid(p["uid"])
        if os.getuid() != p["uid"] or os.geteuid() != p["uid"]:
            raise SystemExit("privilege drop failed")
    setlim(resource.RLIMIT_AS, p["mem"])

    calls = p["calls"]
    timeout = p["timeout"]
    max_out = p["max_out"]

    def fail_all(reason, msg, refused=()):
        for i in range(len(calls)):
            emit({"i": i, "ok": False, "reason": reason, "error": msg, "seconds": 0.0,
                  "blocked": list(refused)})

    try:
        code = compile(p["code"], "<untrusted>", "exec")
    except (SyntaxError, ValueError, MemoryError, RecursionError) as exc:
        fail_all("syntax", type(exc).__name__ + ": " + str(exc)[:500])
        return

    blocked = []
    if p["hooks"]:
        _install_hook(tmp, blocked)

    class _CallTimeout(BaseException):
        pass

    def _alarm(signum, frame):
        raise _CallTimeout()

    signal.signal(signal.SIGALRM, _alarm)
    _setitimer = signal.setitimer
    _REAL = signal.ITIMER_REAL
    _mono = time.monotonic

    def guarded(thunk):
        t0 = _mono()
        _setitimer(_REAL, timeout)
        try:
            try:
                return ("ok", thunk(), _mono() - t0)
            finally:
                _setitimer(_REAL, 0)
        except _CallTimeout:
            return ("timeout", "timed out after %.2fs" % timeout, _mono() - t0)
        except MemoryError:
            return ("memory", "MemoryError", _mono() - t0)
        except BaseException as exc:
            try:
                msg = (type(exc).__name__ + ": " + str(exc))[:500]
            except BaseException:
                msg = "unprintable exception"
            return ("error", msg, _mono() - t0)

    ns = {"__name__": "__untrusted__", "__builtins__": builtins}
    del blocked[:]
    status, val, secs = guarded(lambda: exec(code, ns))
    if status != "ok" or blocked:
        reason = "blocked" if blocked else status
        fail_all(reason, ("module level: " + str(val) if status != "ok" else "module level")
                 + ("; refused: " + ", ".join(blocked) if blocked else ""), blocked)
        return
    fn = ns.get(p["func"])
    if not callable(fn):
        fail_all("missing_function", "no callable named %r" % p["func"])
        return
    for i, args in enumerate(calls):
        del blocked[:]
        status, val, secs = guarded(lambda: fn(*args))
        rec = {"i": i, "seconds": secs, "blocked": list(blocked)}
        if blocked:
            rec.update(ok=False, reason="blocked",
                       error="refused: " + ", ".join(blocked) + ("" if status == "ok" else "; " + str(val)))
        elif status != "ok":
            rec.update(ok=False, reason=status, error=val)
        else:
            try:
                size = len(_dumps(val))
            except BaseException as exc:
                rec.update(ok=False, reason="unserializable", error=type(exc).__name__ + ": " + repr(val)[:200])
            else:
                if size > max_out:
                    rec.update(ok=False, reason="output_too_large", error="%d bytes" % size)
                else:
                    rec.update(ok=True, value=val)
        emit(rec)


def _install_hook(tmp, blocked):
    import posix
    _lstat, _readlink, _getcwd = posix.lstat, posix.readlink, posix.getcwd
    _isinstance, _str, _bytes, _int, _list = isinstance, str, bytes, int, list
    _len, _type = len, type
    _O_WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    _append = blocked.append
    _PermissionError = PermissionError

    def resolve(path):
        # realpath without module-level helpers the untrusted code could patch
        # Only exact str/bytes are trusted: a str subclass or an os.PathLike could
        # answer differently here than to the real call (time-of-check/time-of-use).
        t = _type(path)
        if t is _bytes:
            path = _bytes.decode(path, "utf-8", "surrogateescape")
        elif t is not _str:
            return None
        if not path.startswith("/"):
            path = _getcwd() + "/" + path
        parts = _list(p for p in path.split("/") if p not in ("", "."))
        out = []
        hops = 0
        while parts:
            part = parts.pop(0)
            if part == "..":
                if out:
                    out.pop()
                continue
            cand = "/" + "/".join(out + [part])
            try:
                st = _lstat(cand)
                is_link = (st.st_mode & 0o170000) == 0o120000
            except OSError:
                is_link = False
            if is_link and hops < 40:
                hops += 1
                target = _readlink(cand)
                tparts = [p for p in target.split("/") if p not in ("", ".")]
                if target.startswith("/"):
                    out = []
                parts = tparts + parts
                continue
            out.append(part)
        return "/" + "/".join(out)

    tmp_real = resolve(tmp)
    read_roots = [tmp_real] + [resolve(p) for p in sys.path if p] + [resolve(sys.base_prefix), resolve(sys.prefix)]
    read_files = ("/dev/null", "/dev/urandom", "/dev/zero")

    def under(path, roots):
        if path is None:
            return False
        for r in roots:
            if path == r or path.startswith(r + "/"):
                return True
        return False

    deny_prefixes = ("socket.", "ctypes.", "os.exec", "os.spawn", "os.posix_spawn", "os.fork",
                     "pty.", "winreg.", "_winapi.", "webbrowser.")
    deny_exact = ("os.system", "subprocess.Popen", "os.kill", "os.killpg", "signal.pthread_kill",
                  "os.startfile", "sys.remote_exec", "sys.setprofile", "sys.settrace",
                  "os.chroot", "mmap.__new__", "sys.addaudithook", "cpython.remove_audit_hooks")
    deny_imports = ("socket", "_socket", "ssl", "_ssl", "subprocess", "_posixsubprocess",
                    "multiprocessing", "_multiprocessing", "ctypes", "_ctypes", "gc", "pty",
                    "mmap", "asyncio", "urllib", "http", "ftplib", "smtplib", "telnetlib",
                    "xmlrpc", "socketserver", "resource", "_xxsubinterpreters")
    # event -> (positions of path arguments, positions of dir_fd arguments)
    path_events = {
        "os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)),
        "os.rename": ((0, 1), (2, 3)), "os.link": ((0, 1), (2, 3)),
        "os.symlink": ((0, 1), (2,)), "os.truncate": ((0,), ()),
        "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)), "os.chflags": ((0,), ()),
        "os.lchflags": ((0,), ()), "os.lchmod": ((0,), ()), "os.mkdir": ((0,), (2,)),
        "os.utime": ((0,), (3,)), "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()),
        "os.mkfifo": ((0,), (2,)), "os.mknod": ((0,), (3,)),
        "shutil.rmtree": ((0,), (1,)), "shutil.copyfile": ((0, 1), ()),
        "shutil.copymode": ((0, 1), ()), "shutil.copystat": ((0, 1), ()),
        "shutil.copytree": ((0, 1), ()), "shutil.move": ((0, 1), ()),
        "shutil.chown": ((0,), ()), "shutil.make_archive": ((0, 2), ()),
        "shutil.unpack_archive": ((0, 1), ()),
    }

    def refuse(event, detail=""):
        _append(event + (" " + detail if detail else ""))
        raise _PermissionError("teachfit sandbox refused " + event + (" " + detail if detail else ""))

    def hook(event, args):
        if event in deny_exact:
            refuse(event)
        for pre in deny_prefixes:
            if event.startswith(pre):
                refuse(event)
        if event == "import":
            name = args[0]
            name = _str.__str__(name) if _isinstance(name, _str) else ""
            if name.split(".")[0] in deny_imports:
                refuse(event, name)
            return
        if event == "open":
            path, mode, flags = args[0], args[1], args[2]
            if _isinstance(path, _int):
                return
            real = resolve(path)
            writing = False
            if _isinstance(mode, _str):
                for c in "wax+":
                    if c in mode:
                        writing = True
            if _isinstance(flags, _int) and flags & _O_WRITE:
                writing = True
            if writing:
                if not under(real, (tmp_real,)):
                    refuse(event, "write " + _str(real or _type(path).__name__))
            elif not (under(real, read_roots) or real in read_files):
                refuse(event, "read " + _str(real or _type(path).__name__))
            return
        spec = path_events.get(event)
        if spec is not None:
            n = _len(args)
            for k in spec[1]:
                if k < n and args[k] is not None and args[k] != -1:
                    # a dir_fd makes the path relative to a directory we cannot check
                    refuse(event, "dir_fd")
            for k in spec[0]:
                if k < n:
                    a = args[k]
                    if a is None or _isinstance(a, _int):
                        continue  # an already-open file descriptor
                    if not under(resolve(a), (tmp_real,)):
                        refuse(event, _str(_type(a).__name__) + " " + _str(resolve(a) or ""))
            return
        if event == "os.chdir" and args:
            if not _isinstance(args[0], _int) and not under(resolve(args[0]), read_roots):
                refuse(event, _str(args[0]))
            return
        if event in ("os.listdir", "os.scandir"):
            if args and args[0] is not None and not _isinstance(args[0], _int):
                if not under(resolve(args[0]), read_roots):
                    refuse(event, _str(args[0]))
            return

    sys.addaudithook(hook)


try:
    _main()
except SystemExit:
    raise
except BaseException as exc:
    sys.stderr.write("sandbox runner failed: %s: %s\n" % (type(exc).__name__, exc))
    sys.exit(70)
'''


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
        cmd = [*netns, sys.executable, "-I", "-S", "-c", _RUNNER, str(tmp)]
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
