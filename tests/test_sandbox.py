"""Hostile-code tests for teachfit.studies.evolver.sandbox: each attack is contained, counted, and the host is fine."""

from __future__ import annotations

import json
import os
import socket
import time

import psutil
import pytest

from teachfit.studies.evolver.sandbox import (
    SandboxJob,
    SandboxSettings,
    network_namespace_prefix,
    run_batch,
    run_many,
    run_untrusted,
)

# Small wall-clock slack so that the limits tested here stay short.
FAST = {"timeout_s": 1.0, "startup_s": 2.0}
IS_ROOT = os.geteuid() == 0


def _sandbox_procs() -> list[psutil.Process]:
    """Processes still running one of our sandbox children (their argv names the temp dir)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any("teachfit-sbx-" in part for part in proc.info["cmdline"] or ()):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def _my_children() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


def _host_still_fine() -> None:
    res = run_untrusted("def f(a, b):\n    return a * b\n", "f", [6, 7])
    assert res.ok and res.value == 42


# ----------------------------------------------------------------------------- normal code


def test_normal_functions_return_values():
    code = (
        "import re\n"
        "def evaluate(response: str) -> bool:\n"
        "    return len(re.findall(r'\\w+', response)) < 5\n"
    )
    res = run_batch(code, "evaluate", [["one two"], ["a b c d e f g"], [""]])
    assert [r.ok for r in res] == [True, True, True]
    assert [r.value for r in res] == [True, False, True]
    assert all(r.reason is None for r in res)
    res = run_untrusted("def f(xs, k):\n    return {'s': sum(xs) * k, 'n': len(xs)}\n", "f", [[1, 2, 3], 2])
    assert res.ok and res.value == {"s": 12, "n": 3}


def test_code_errors_are_reasons():
    assert run_untrusted("def f(:\n", "f", []).reason == "syntax"
    assert run_untrusted("x = 1\n", "f", []).reason == "missing_function"
    res = run_untrusted("def f():\n    return 1 / 0\n", "f", [])
    assert not res.ok and res.reason == "error" and "ZeroDivisionError" in res.error
    assert run_untrusted("def f():\n    return object()\n", "f", []).reason == "unserializable"
    res = run_untrusted("import os\ndef f():\n    os._exit(3)\n", "f", [])
    assert not res.ok and res.reason == "crash" and "code 3" in res.error
    res = run_untrusted("def f():\n    return 'x' * 2_000_000\n", "f", [])
    assert res.reason == "output_too_large"


def test_one_failing_call_does_not_spoil_the_batch():
    code = "def f(x):\n    if x == 1:\n        raise ValueError('bad')\n    return x * 10\n"
    res = run_batch(code, "f", [[0], [1], [2]])
    assert [r.ok for r in res] == [True, False, True]
    assert res[0].value == 0 and res[2].value == 20 and res[1].reason == "error"


# ----------------------------------------------------------------------------- time


def test_infinite_loop_is_stopped_by_the_call_timer():
    settings = SandboxSettings(**FAST)
    t0 = time.monotonic()
    res = run_batch("def f():\n    while True:\n        pass\n", "f", [[]], settings)[0]
    elapsed = time.monotonic() - t0
    assert not res.ok and res.reason == "timeout"
    assert elapsed < settings.timeout_s + settings.startup_s + 1.0
    assert _sandbox_procs() == []
    _host_still_fine()


def test_infinite_loop_that_ignores_the_timer_is_killed_at_the_wall_clock_limit():
    settings = SandboxSettings(**FAST)
    code = (
        "import signal\n"
        "def f():\n"
        "    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n"
        "    while True:\n"
        "        pass\n"
    )
    t0 = time.monotonic()
    res = run_batch(code, "f", [[], []], settings)
    elapsed = time.monotonic() - t0
    wall = settings.timeout_s * 2 + settings.startup_s
    assert [r.reason for r in res] == ["timeout", "timeout"]
    assert elapsed < wall + 1.5, f"took {elapsed:.1f}s for a {wall:.1f}s wall-clock limit"
    assert _sandbox_procs() == []
    _host_still_fine()


# ----------------------------------------------------------------------------- processes

# Linear (bounded) bomb: even if every layer failed it would make at most 200
# sleeping children, never an exponential storm on the shared test machine.
FORK_BOMB = (
    "import os, time\n"
    "def f():\n"
    "    made = 0\n"
    "    for _ in range(200):\n"
    "        if os.fork() == 0:\n"
    "            time.sleep(60)\n"
    "            os._exit(0)\n"
    "        made += 1\n"
    "    return made\n"
)


def test_fork_bomb_is_refused_and_leaves_no_processes():
    before = _my_children()
    res = run_untrusted(FORK_BOMB, "f", [])
    assert not res.ok and res.reason == "blocked" and "os.fork" in res.error
    assert _my_children() == before
    assert _sandbox_procs() == []
    res = run_untrusted("import os\ndef f():\n    return os.system('echo hi')\n", "f", [])
    assert res.reason == "blocked"
    res = run_untrusted("import subprocess\ndef f():\n    return 1\n", "f", [])
    assert res.reason == "blocked"


def test_fork_bomb_is_contained_by_rlimit_nproc_without_the_audit_hook():
    # The kernel ignores RLIMIT_NPROC for root; as root the child runs as nobody.
    settings = SandboxSettings(audit_hooks=False, **FAST)
    before = _my_children()
    res = run_batch(FORK_BOMB, "f", [[]], settings)[0]
    assert not res.ok and res.reason == "error" and "BlockingIOError" in res.error
    assert _my_children() == before
    assert _sandbox_procs() == []


# ----------------------------------------------------------------------------- files


@pytest.fixture
def sentinel(tmp_path):
    target = tmp_path / "keep" / "sentinel.txt"
    target.parent.mkdir()
    target.write_text("precious")
    return target


def test_deleting_files_outside_the_temp_dir_is_refused(sentinel):
    code = (
        "import os, shutil\n"
        "def rm(path):\n    os.remove(path)\n"
        "def rmtree(path):\n    shutil.rmtree(path)\n"
        "def rename(path):\n    os.rename(path, path + '.gone')\n"
    )
    for fn, arg in (("rm", str(sentinel)), ("rmtree", str(sentinel.parent)), ("rename", str(sentinel))):
        res = run_untrusted(code, fn, [arg])
        assert not res.ok and res.reason == "blocked", (fn, res)
    assert sentinel.read_text() == "precious"


@pytest.mark.skipif(not IS_ROOT, reason="the OS-permission layer is the uid drop, which needs root")
def test_deleting_files_is_refused_by_permissions_without_the_audit_hook(sentinel):
    settings = SandboxSettings(audit_hooks=False, **FAST)
    res = run_batch("import os\ndef f(p):\n    os.remove(p)\n", "f", [[str(sentinel)]], settings)[0]
    assert not res.ok and res.reason == "error" and "PermissionError" in res.error
    assert sentinel.read_text() == "precious"


def test_writing_outside_the_temp_dir_is_refused_but_inside_is_allowed(tmp_path):
    outside = tmp_path / "evil.txt"
    code = (
        "import os, pathlib\n"
        "def w(p):\n    open(p, 'w').write('x')\n"
        "def a(p):\n    open(p, 'a').write('x')\n"
        "def low(p):\n    os.close(os.open(p, os.O_WRONLY | os.O_CREAT))\n"
        "def pl(p):\n    pathlib.Path(p).write_text('x')\n"
        "def rel(p):\n    open('../../' + p, 'w')\n"
        "class Evil(str):\n"
        "    def startswith(self, *a):\n        return True\n"
        "    def split(self, *a):\n        return ['tmp']\n"
        "def sub(p):\n    open(Evil(p), 'w').write('x')\n"
        "def inside():\n"
        "    with open('note.txt', 'w') as fh:\n        fh.write('ok')\n"
        "    return open('note.txt').read()\n"
    )
    for fn in ("w", "a", "low", "pl", "rel", "sub"):
        res = run_untrusted(code, fn, [str(outside)])
        assert not res.ok and res.reason == "blocked", (fn, res)
    assert not outside.exists()
    res = run_untrusted(code, "inside", [])
    assert res.ok and res.value == "ok"


def test_huge_allocation_fails_with_memory_and_host_is_fine():
    res = run_untrusted("def f():\n    return len(bytearray(10**10))\n", "f", [])
    assert not res.ok and res.reason == "memory"
    # just above the 64 MiB limit set here (the interpreter itself needs ~20 MiB)
    settings = SandboxSettings(memory_mb=64, **FAST)
    res = run_batch("def f():\n    return len(bytearray(80 * 2**20))\n", "f", [[]], settings)[0]
    assert not res.ok and res.reason == "memory"
    res = run_batch("def f():\n    return len(bytearray(8 * 2**20))\n", "f", [[]], settings)[0]
    assert res.ok and res.value == 8 * 2**20
    _host_still_fine()


# ----------------------------------------------------------------------------- secrets


def test_secrets_in_the_environment_do_not_reach_the_child(monkeypatch):
    secret = "s3cr3t-teachfit-value"
    monkeypatch.setenv("TEACHFIT_SECRET", secret)
    res = run_untrusted("import os\ndef f():\n    return dict(os.environ)\n", "f", [])
    assert res.ok and "TEACHFIT_SECRET" not in res.value and secret not in json.dumps(res.value)
    res = run_untrusted("import os\ndef f():\n    return os.environ['TEACHFIT_SECRET']\n", "f", [])
    assert not res.ok and res.reason == "error" and "KeyError" in res.error
    # the parent's environment through /proc: refused (and unreadable for nobody)
    code = "import os\ndef f():\n    return open('/proc/%d/environ' % os.getppid(), 'rb').read().decode()\n"
    res = run_untrusted(code, "f", [])
    assert not res.ok and res.reason == "blocked"
    assert secret not in (res.error or "")
    res = run_untrusted("def f():\n    return open('/etc/hostname').read()\n", "f", [])
    assert res.reason == "blocked"


# ----------------------------------------------------------------------------- network


@pytest.fixture
def listener():
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(0.5)
    yield srv
    srv.close()


def _saw_connection(srv: socket.socket) -> bool:
    try:
        conn, _ = srv.accept()
    except TimeoutError:
        return False
    conn.close()
    return True


NET_CODE = (
    "import socket\n"
    "def f(port):\n"
    "    s = socket.create_connection(('127.0.0.1', port), timeout=1)\n"
    "    s.sendall(b'leak')\n"
    "    return 'connected'\n"
)


def test_network_calls_are_blocked(listener):
    port = listener.getsockname()[1]
    res = run_untrusted(NET_CODE, "f", [port])
    assert not res.ok and res.reason == "blocked"
    code = "def f(port):\n    s = __import__('_socket').socket()\n    s.connect(('127.0.0.1', port))\n"
    res = run_untrusted(code, "f", [port])
    assert not res.ok and res.reason == "blocked"
    assert not _saw_connection(listener)


@pytest.mark.skipif(not network_namespace_prefix("auto"), reason="no usable `unshare -n` here")
def test_network_namespace_blocks_connections_without_the_audit_hook(listener):
    port = listener.getsockname()[1]
    settings = SandboxSettings(audit_hooks=False, **FAST)
    res = run_batch(NET_CODE, "f", [[port]], settings)[0]
    assert not res.ok and res.reason == "error"
    assert not _saw_connection(listener)


def test_ctypes_is_refused():
    res = run_untrusted("def f():\n    import ctypes\n    return 1\n", "f", [])
    assert not res.ok and res.reason == "blocked"


# ----------------------------------------------------------------------------- batch + settings


def test_run_many_keeps_order_and_isolates_jobs(sentinel):
    # Hostile targets are always test-owned files, never real system files: a
    # regression must not be able to damage the machine the tests run on.
    jobs = [
        SandboxJob("def f(x):\n    return x + 1\n", "f", ((1,), (2,))),
        SandboxJob("def f(x):\n    while True:\n        pass\n", "f", ((0,),)),
        SandboxJob("def g(x):\n    return str(x)\n", "g", ((5,),)),
        SandboxJob("import os\ndef f(p):\n    os.remove(p)\n", "f", ((str(sentinel),),)),
    ]
    out = run_many(jobs, SandboxSettings(workers=2, **FAST))
    assert [r.value for r in out[0]] == [2, 3]
    assert out[1][0].reason == "timeout"
    assert out[2][0].value == "5"
    assert out[3][0].reason == "blocked"
    assert sentinel.read_text() == "precious"


def test_settings_reject_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match="timeout_secs.*allowed"):
        SandboxSettings.from_dict({"timeout_secs": 3})
    with pytest.raises(ValueError, match="network_namespace"):
        SandboxSettings.from_dict({"network_namespace": "maybe"})
    assert SandboxSettings.from_dict({"memory_mb": 128}).memory_mb == 128
