"""The sandbox's child program: run one batch of calls of untrusted code and report them.

Run by :func:`teachfit.studies.evolver.sandbox.run_batch` as ``python -I -S <this file> <tmpdir>``
(isolated mode, no site-packages), in a fresh session with an empty environment: it reads
``<tmpdir>/payload.json`` (code, function name, calls, limits), sets the ``resource`` limits,
drops to ``nobody`` when asked, installs the audit hook, runs the calls one by one under a
per-call timer and appends one JSON line per call to ``<tmpdir>/result.jsonl``.

Standard library only, and nothing from teachfit: ``-I -S`` leaves site-packages off the path.
"""
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


if __name__ == "__main__":
    try:
        _main()
    except SystemExit:
        raise
    except BaseException as exc:
        sys.stderr.write("sandbox runner failed: %s: %s\n" % (type(exc).__name__, exc))
        sys.exit(70)
