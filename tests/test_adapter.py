"""teachfit.workflow.run: a rule's named input/output/params keys are its function's parameters."""

from __future__ import annotations

import pytest
from snakemake.iocontainers import InputFiles, Log, OutputFiles, Params

from teachfit.workflow import WiringError, run


@pytest.fixture(autouse=True)
def _restore_logging():
    """run() points logging and stderr at the job's log file; undo that for the other tests."""
    import logging
    import os
    import sys

    import torch

    root = logging.getLogger()
    saved = (list(root.handlers), root.level, sys.stderr, os.environ.get("OMP_NUM_THREADS"))
    torch_threads = torch.get_num_threads()
    yield
    torch.set_num_threads(torch_threads)
    root.handlers[:], root.level = saved[0], saved[1]
    if sys.stderr is not saved[2]:
        sys.stderr.close()
        sys.stderr = saved[2]
    if saved[3] is None:
        os.environ.pop("OMP_NUM_THREADS", None)
    else:
        os.environ["OMP_NUM_THREADS"] = saved[3]


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
