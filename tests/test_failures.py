"""Failure survival: a killed job resumes where it stopped, interrupted writes leave no
complete-looking file, and a corrupt input is reported with its path.

* SFT killed after checkpoint-2 resumes from checkpoint-2 (library level: a callback raises
  after the save; workflow level: ``snakemake`` is SIGKILLed during ``train_sft``, then
  unlocked and re-run).
* generation killed after 2 of 5 shards regenerates only the 3 missing shards.
* ``teachfit.io.write_*`` interrupted half-way leave nothing under the final name.
* truncated / garbage / empty Parquet inputs raise ``DataError`` naming the file, also
  through a stage function (``teachfit.training.selection.select_trainset``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from workflow_utils import Preempted, preempt_after_save

from teachfit.io import DataError, read_parquet, write_csv, write_json, write_parquet

SFT = {"max_steps": 4, "save_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-2,
       "max_length": 64}


def _sft() -> dict:
    """The sft section a rule passes: schema defaults plus SFT."""
    from teachfit.schema import defaults

    return defaults("sft", **SFT)


def _train(tiny: Path, train_file: Path, out: Path, scratch: Path, log_table: Path, **kw) -> dict:
    """train_sft with the rule's keywords."""
    from teachfit.training.sft import train_sft

    return train_sft(trainset=train_file, model_dir=tiny, sft_dir=out, train_log=log_table, sft=_sft(),
                     scratch=scratch, **kw)


Killed = Preempted  # SIGKILL / preemption stand-in (shared with tests/test_sft.py)


@pytest.fixture(scope="module")
def tiny(tiny_llama) -> Path:
    """The session's tiny random llama (conftest.tiny_llama)."""
    return tiny_llama


@pytest.fixture(scope="module")
def train_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.parquet"
    rows = [{"id": f"ex{i}", "instruction": f"add {i} and {i}", "response": f"{2 * i}"} for i in range(8)]
    write_parquet(pl.DataFrame(rows), path)
    return path


# --------------------------------------------------------------------------- SFT resume


def _sft_paths(tmp_path: Path) -> tuple[Path, Path, Path]:
    return tmp_path / "out", tmp_path / "scratch", tmp_path / "log.parquet"


def test_sft_killed_after_checkpoint_resumes_from_it(tiny, train_file, tmp_path, caplog):
    out, scratch, log_table = _sft_paths(tmp_path)
    with pytest.raises(Killed):
        _train(tiny, train_file, out, scratch, log_table, callbacks=[preempt_after_save(2)])
    assert not out.exists() and not log_table.exists()
    assert [p.name for p in scratch.glob("checkpoint-*")] == ["checkpoint-2"]

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="teachfit.training.sft"):
        summary = _train(tiny, train_file, out, scratch, log_table)
    lines = [r.getMessage() for r in caplog.records if r.name == "teachfit.training.sft"]
    assert any(line.startswith("resuming from checkpoint-2 ") for line in lines), lines
    assert not any(line.startswith("training from scratch") for line in lines)
    assert summary["resumed_from"] == 2 and summary["start_step"] == 2
    assert summary["steps_run"] == 2 and summary["steps"] == 4
    df = pl.read_parquet(log_table)
    new_steps = df.filter(~pl.col("restored"))["step"].to_list()
    assert new_steps[0] == 3 and new_steps == [3, 4]
    assert df.filter(pl.col("restored"))["step"].to_list() == [1, 2]
    assert set(df["resumed_from"].to_list()) == {2}
    assert json.loads((out / "checkpoints.json").read_text())[-1]["step"] == 4


def test_sft_kill_during_checkpoint_save_resumes_from_last_complete(tiny, train_file, tmp_path, caplog):
    out, scratch, log_table = _sft_paths(tmp_path)
    with pytest.raises(Killed):
        _train(tiny, train_file, out, scratch, log_table, callbacks=[preempt_after_save(2)])
    # what SIGKILL half-way through the save of checkpoint-4 leaves: weights, no trainer state
    partial = scratch / "checkpoint-4"
    partial.mkdir()
    for f in (scratch / "checkpoint-2").glob("adapter_*"):
        shutil.copy2(f, partial / f.name)
    with caplog.at_level(logging.INFO, logger="teachfit.training.sft"):
        summary = _train(tiny, train_file, out, scratch, log_table)
    assert summary["resumed_from"] == 2 and summary["steps"] == 4


# --------------------------------------------------------------------------- generation resume


class KilledAfter:
    """A backend wrapper: passes ``n_ok`` shard calls through, then raises."""

    def __init__(self, inner, n_ok: int):
        self.inner, self.n_ok, self.calls = inner, n_ok, []
        self.info = inner.info

    def generate(self, prompts, sampling, desc="generate"):
        if len(self.calls) >= self.n_ok:
            raise Killed(f"killed before shard {len(self.calls) + 1}")
        self.calls.append(list(prompts))
        return self.inner.generate(prompts, sampling, desc)


def test_generation_killed_after_two_shards_regenerates_only_the_rest(tiny, tmp_path):
    from teachfit.generation.base import SamplingConfig
    from teachfit.generation.driver import generate_to_parquet
    from teachfit.generation.hf import TransformersBackend

    backend = TransformersBackend(tiny, batch_size=4, threads=1)
    records = [{"id": f"r{i}", "instruction": f"say {i}"} for i in range(10)]
    prompts = [f"Question: say {i}\nAnswer:" for i in range(10)]
    sampling = SamplingConfig(max_new_tokens=4)

    def run(wrapper, base: Path) -> pl.DataFrame:
        return generate_to_parquet(wrapper, records, prompts, sampling, base / "out.parquet",
                                   base / "shards", shard_size=2, provenance={"generator": "g"})

    first = KilledAfter(backend, n_ok=2)
    with pytest.raises(Killed):
        run(first, tmp_path)
    assert first.calls == [prompts[0:2], prompts[2:4]]
    assert not (tmp_path / "out.parquet").exists()
    assert len(list((tmp_path / "shards").glob("run-*/shard-*.parquet"))) == 2

    second = KilledAfter(backend, n_ok=99)
    resumed = run(second, tmp_path)
    assert second.calls == [prompts[4:6], prompts[6:8], prompts[8:10]]  # shards 3-5 only

    uninterrupted = run(KilledAfter(backend, n_ok=99), tmp_path / "ref")
    assert resumed.drop("gen_key").equals(uninterrupted.drop("gen_key"))
    assert resumed["id"].to_list() == [r["id"] for r in records]


# --------------------------------------------------------------------------- atomic writes


def _interrupt(monkeypatch, method: str) -> None:
    """Make ``pl.DataFrame.<method>`` write half a file and then die."""

    def half_then_die(self, file, *args, **kwargs):
        Path(file).write_bytes(b"PAR1 half a file")
        raise Killed(f"interrupted in {method}")

    monkeypatch.setattr(pl.DataFrame, method, half_then_die)


@pytest.mark.parametrize(("method", "writer", "name"), [
    ("write_parquet", write_parquet, "table.parquet"),
    ("write_csv", write_csv, "table.csv"),
])
def test_interrupted_write_leaves_no_file_under_final_name(monkeypatch, tmp_path, method, writer, name):
    df = pl.DataFrame({"id": ["a", "b"], "x": [1, 2]})
    target = tmp_path / "sub" / name
    _interrupt(monkeypatch, method)
    with pytest.raises(Killed):
        writer(df, target)
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temp file is gone too


def test_interrupted_overwrite_keeps_the_old_file(monkeypatch, tmp_path):
    target = tmp_path / "table.parquet"
    old = pl.DataFrame({"id": ["old"]})
    write_parquet(old, target)
    _interrupt(monkeypatch, "write_parquet")
    with pytest.raises(Killed):
        write_parquet(pl.DataFrame({"id": ["new", "new2"]}), target)
    monkeypatch.undo()
    assert read_parquet(target).equals(old)
    assert [p.name for p in tmp_path.iterdir()] == ["table.parquet"]


def test_interrupted_json_write_leaves_no_file(monkeypatch, tmp_path):
    target = tmp_path / "summary.json"

    def die(self, *args, **kwargs):
        raise Killed("interrupted in write_text")

    monkeypatch.setattr(Path, "write_text", die)
    with pytest.raises(Killed):
        write_json({"a": 1}, target)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- corrupt inputs


def _good_parquet(path: Path) -> Path:
    df = pl.DataFrame({"id": [f"i{k}" for k in range(50)], "instruction": ["q"] * 50, "response": ["a"] * 50})
    df.write_parquet(path)
    return path


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "header_only"])
def test_corrupt_parquet_is_reported_with_its_path(tmp_path, damage):
    path = _good_parquet(tmp_path / f"{damage}.parquet")
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "garbage": b"\x00\xff" * 300,
                      "empty": b"", "header_only": b"PAR1"}[damage])
    with pytest.raises(DataError) as err:
        read_parquet(path)
    assert str(path) in str(err.value)
    assert "truncated or corrupt" in str(err.value)


def test_missing_columns_are_reported_with_file_and_columns(tmp_path):
    path = tmp_path / "t.parquet"
    pl.DataFrame({"id": ["a"]}).write_parquet(path)
    with pytest.raises(DataError, match=r"t\.parquet: missing required column\(s\) \['response'\]"):
        read_parquet(path, required=["id", "response"])


def test_corrupt_input_through_a_stage_names_the_file(tmp_path):
    from teachfit.training.selection import select_trainset

    responses = _good_parquet(tmp_path / "responses.parquet")
    good = responses.read_bytes()
    out = tmp_path / "trainset.parquet"
    full = {"method": "full", "top_percent": 100.0}

    responses.write_bytes(good[: len(good) - 20])  # footer cut off
    with pytest.raises(DataError) as err:
        select_trainset(responses=responses, scores=[], trainset=out, selection=full, label="full")
    assert str(responses) in str(err.value)
    assert not out.exists()

    responses.write_bytes(good)
    scores = tmp_path / "scores.parquet"
    scores.write_bytes(b"not parquet at all")
    with pytest.raises(DataError) as err:
        select_trainset(responses=responses, scores=[str(scores)], trainset=out,
                        selection={"method": "ifd", "top_percent": 50.0, "seed": 0}, label="ifd50")
    assert str(scores) in str(err.value)
    assert not out.exists()


# --------------------------------------------------------------------------- workflow level


RUN_KEY = "tiny/t_greedy/full/tiny_base"


def _complete(ckpt: Path) -> bool:
    try:
        json.loads((ckpt / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


@pytest.mark.slow
def test_workflow_sft_killed_mid_run_resumes_from_last_checkpoint(tiny_run, tmp_path):
    """SIGKILL the whole snakemake process group while train_sft runs (after a checkpoint),
    ``--unlock``, re-run: the job's log says it resumed from that checkpoint."""
    from workflow_utils import snakemake

    wf = tmp_path / "wf"
    shutil.copytree(tiny_run, wf, symlinks=True)
    overlay = tmp_path / "longer_sft.yaml"  # long enough to be killed between checkpoints
    overlay.write_text("sft: {max_steps: 20, save_steps: 5}\n")
    config = ["--configfile", "tests/configs/tiny.yaml", str(overlay)]
    args = [f"results/sft/{RUN_KEY}.train_log.parquet", *config]
    scratch = wf / "results" / "scratch" / "sft" / RUN_KEY
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "2", *args], cwd=wf, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 600
    try:
        while not _complete(scratch / "checkpoint-5"):
            assert proc.poll() is None, "snakemake ended before the first checkpoint"
            assert time.time() < deadline, "no checkpoint-5 within 10 min"
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done = sorted(int(p.name.split("-")[1]) for p in scratch.glob("checkpoint-*") if _complete(p))
    assert 5 in done and max(done) < 20
    assert all(_complete(p) for p in scratch.glob("checkpoint-*")), "killed during a save (see xfail above)"
    assert not (wf / "results" / "sft" / f"{RUN_KEY}.train_log.parquet").exists()

    locked = snakemake(wf, *args, check=False, timeout=300)
    assert locked.returncode != 0 and "unlock" in locked.stdout + locked.stderr
    snakemake(wf, "--unlock", *config)
    log_file = wf / "results" / "logs" / "train_sft" / f"{RUN_KEY}.log"
    log_file.unlink(missing_ok=True)
    snakemake(wf, *args, timeout=900)

    last = max(done)
    lines = log_file.read_text().splitlines()
    assert any(f"resuming from checkpoint-{last} " in line for line in lines), "\n".join(lines[-30:])
    assert not any("training from scratch" in line for line in lines)
    table = pl.read_parquet(wf / "results" / "sft" / f"{RUN_KEY}.train_log.parquet")
    assert set(table["resumed_from"].to_list()) == {last}
    assert table.filter(~pl.col("restored"))["step"].min() == last + 1
    assert table["step"].max() == 20
