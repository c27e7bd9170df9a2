"""teachfit.workflow.adapter.run: a rule's named input/output/params keys are its function's parameters."""

from __future__ import annotations

import pytest
from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params

from teachfit.workflow.adapter import WiringError, run


@pytest.fixture(autouse=True)
def _restore_logging():
    """run() points logging and stderr at the job's log file; undo that for the other tests."""
    import logging
    import os
    import sys

    import torch

    root = logging.getLogger()
    saved = (list(root.handlers), root.level, sys.stderr, os.environ.get("OMP_NUM_THREADS"),
             os.environ.get("MKL_NUM_THREADS"))
    torch_threads = torch.get_num_threads()
    yield
    torch.set_num_threads(torch_threads)
    root.handlers[:], root.level = saved[0], saved[1]
    if sys.stderr is not saved[2]:
        sys.stderr.close()
        sys.stderr = saved[2]
    for var, value in (("OMP_NUM_THREADS", saved[3]), ("MKL_NUM_THREADS", saved[4])):
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


class Job:
    """The parts of a Snakemake script's ``snakemake`` object that run() reads."""

    def __init__(self, tmp_path, input=None, output=None, params=None, threads=2):  # noqa: A002
        self.input = InputFiles(fromdict=input or {})
        self.output = OutputFiles(fromdict=output or {})
        self.params = Params(fromdict=params or {})
        self.log = Log(fromdict={"log": str(tmp_path / "job.log")})
        self.threads = threads
        self.rule = "some_rule"


def test_named_keys_become_keyword_arguments(tmp_path):
    seen = {}

    def fn(responses, scores, table, beta, threads):
        seen.update(responses=responses, scores=scores, table=table, beta=beta, threads=threads)
        return "done"

    job = Job(tmp_path, input={"responses": "a.parquet", "scores": ["s1", "s2"]},
              output={"table": "t.csv"}, params={"beta": {"x": [1, 2]}}, threads=3)
    assert run(fn, job) == "done"
    assert seen["responses"] == "a.parquet" and seen["table"] == "t.csv"
    assert seen["beta"] == {"x": [1, 2]} and seen["threads"] == 3
    assert (tmp_path / "job.log").exists()


def test_list_inputs_stay_lists(tmp_path):
    job = Job(tmp_path)
    job.input = InputFiles(["x.parquet", "y.parquet"])
    job.input._set_name("files", 0, end=2)
    assert run(lambda files: files, job) == ["x.parquet", "y.parquet"]
    empty = Job(tmp_path)
    empty.input = InputFiles([])
    empty.input._set_name("files", 0, end=0)
    assert run(lambda files: files, empty) == []


@pytest.mark.parametrize(("fn", "message"), [
    (lambda table: None, "keys ['responses'] are not parameters"),
    (lambda responses, table, extra: None, "parameters ['extra'] get no input/output/params key"),
])
def test_key_and_parameter_mismatches_fail_before_work(tmp_path, fn, message):
    job = Job(tmp_path, input={"responses": "a"}, output={"table": "t"})
    with pytest.raises(WiringError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run(fn, job)


def test_unnamed_or_repeated_keys_fail(tmp_path):
    job = Job(tmp_path, output={"table": "t"})
    job.input = InputFiles(["unnamed.parquet"])
    with pytest.raises(WiringError, match="every input must be named"):
        run(lambda table: None, job)
    twice = Job(tmp_path, input={"table": "a"}, output={"table": "b"})
    with pytest.raises(WiringError, match="'table' is used twice"):
        run(lambda table: None, twice)


SPAWN_HELPER = '''
import multiprocessing
from pathlib import Path


def child(path):
    Path(path).write_text("written by a spawned child\\n")


def spawn_job(out, calls):
    """A job function that starts a child with 'spawn' (as vLLM's engine start does)."""
    with open(calls, "a") as fh:
        fh.write("called\\n")
    proc = multiprocessing.get_context("spawn").Process(target=child, args=(out,))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"spawned child failed with exit code {proc.exitcode}")
'''

SPAWN_SNAKEFILE = '''
rule all:
    input:
        "out.txt",
        "plain.txt",


rule spawn:
    output:
        out="out.txt",
    params:
        calls="calls.txt",
    log:
        log="spawn.log",
    script:
        "spawn_script.py"


# negative control: the same job function called without teachfit.workflow.adapter.run
rule spawn_plain:
    output:
        out="plain.txt",
    params:
        calls="plain_calls.txt",
    script:
        "plain_script.py"
'''


def test_run_is_spawn_safe_in_a_snakemake_script(tmp_path):
    """Issue 13 fault 3 (the kind): a rule script is ``run(fn, snakemake)``, executed by Snakemake as
    the main module with ``__file__`` set to the original script; a child started with ``spawn``
    re-runs that file as ``__mp_main__`` (without Snakemake's preamble). Through run() the job
    function runs once and the child starts; the same function called plainly (negative
    control) fails in the child with NameError."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "spawn_helper.py").write_text(SPAWN_HELPER)
    (tmp_path / "spawn_script.py").write_text(
        "from spawn_helper import spawn_job\nfrom teachfit.workflow.adapter import run\n\n"
        "run(spawn_job, snakemake)  # noqa: F821\n")
    (tmp_path / "plain_script.py").write_text(
        "from spawn_helper import spawn_job\n\n"
        "spawn_job(snakemake.output.out, snakemake.params.calls)  # noqa: F821\n")
    (tmp_path / "Snakefile").write_text(SPAWN_SNAKEFILE)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "1", "--keep-going"], check=False,
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    log = (tmp_path / "spawn.log").read_text() if (tmp_path / "spawn.log").exists() else ""
    assert (tmp_path / "out.txt").is_file(), proc.stderr[-3000:] + log
    assert (tmp_path / "out.txt").read_text() == "written by a spawned child\n"
    assert (tmp_path / "calls.txt").read_text() == "called\n"  # once: not again in the child
    # without run(): the child re-runs the original script, which has no `snakemake` object
    assert proc.returncode != 0 and not (tmp_path / "plain.txt").exists()
    assert "NameError: name 'snakemake' is not defined" in proc.stderr


def test_in_spawn_reimport_is_false_in_a_normal_process():
    from teachfit.processes import in_spawn_reimport

    assert in_spawn_reimport() is False


def test_in_spawn_reimport_is_true_while_a_spawned_child_reruns_main(tmp_path):
    """What VLLMBackend checks before building an engine: an unguarded script re-run by a spawned
    child (as ``__mp_main__``) sees in_spawn_reimport() True; the child's target then runs."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "unguarded.py"
    script.write_text(
        "import multiprocessing, sys\n"
        "from teachfit.processes import in_spawn_reimport\n"
        "if in_spawn_reimport():\n"
        "    sys.stderr.write('child re-imports main\\n')\n"
        "else:\n"
        "    p = multiprocessing.get_context('spawn').Process(target=print, args=('target ran',))\n"
        "    p.start()\n"
        "    p.join()\n"
        "    sys.stderr.write(f'parent: child exit {p.exitcode}\\n')\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("child re-imports main") == 1 and "parent: child exit 0" in proc.stderr
    assert "target ran" in proc.stdout


def test_job_log_ends_with_its_timing_and_job_times_splits_the_wall_time(tmp_path):
    """run() writes one JOB_TIMING line (startup, model loading, run time); job_times (make bench's
    overhead table) joins it with Snakemake's benchmark TSV of the same rule."""
    import json
    import time

    from teachfit.logs import JOB_TIMING, job_times, timed

    def fn(out):
        with timed("model_load"):
            time.sleep(0.2)
        time.sleep(0.1)

    res = tmp_path / "results"
    job = Job(tmp_path, output={"out": "x"})
    job.log = Log(fromdict={"log": str(res / "logs" / "some_rule" / "a.log")})
    run(fn, job)
    lines = [ln for ln in (res / "logs" / "some_rule" / "a.log").read_text().splitlines() if JOB_TIMING in ln]
    assert len(lines) == 1
    rec = json.loads(lines[0].split(JOB_TIMING, 1)[1])
    assert rec["rule"] == "some_rule" and rec["startup_s"] > 0
    assert 0.2 <= rec["model_load_s"] < rec["run_s"] and rec["run_s"] >= 0.3

    (res / "benchmarks" / "some_rule").mkdir(parents=True)
    (res / "benchmarks" / "some_rule" / "a.tsv").write_text(f"s\th:m:s\n{rec['run_s'] + 10:.3f}\t0:00:10\n")
    (res / "benchmarks" / "plain_rule").mkdir(parents=True)
    (res / "benchmarks" / "plain_rule" / "b.tsv").write_text("s\th:m:s\n2.0\t0:00:02\n")
    t = {r["rule"]: r for r in job_times(res).to_dicts()}
    some = t["some_rule"]
    assert some["jobs"] == 1 and some["model_load_s"] == round(rec["model_load_s"], 1)
    assert some["compute_s"] == round(rec["run_s"] - rec["model_load_s"], 1)
    assert abs(some["startup_s"] + some["model_load_s"] + some["compute_s"] + some["other_s"]
               - some["wall_s"]) < 0.3
    assert t["plain_rule"]["startup_s"] is None  # no timing line: parts unknown, not zero
    assert t["TOTAL"]["wall_s"] == round(rec["run_s"] + 12.0, 1)
