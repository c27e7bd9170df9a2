"""The `teachfit` console command (teachfit.workflow.cli): help, the errors it reports before Snakemake
starts, the overlay it writes, and the Snakemake command it runs (dry runs on the tiny config)."""

from __future__ import annotations

import json
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
import yaml
from workflow_utils import ROOT, copy_workflow, planned_jobs

from teachfit.workflow.cli import main, snakemake_command

TINY = ["--configfile", "tests/configs/tiny.yaml"]
SFT_OR_EVAL = {"train_sft", "evaluate_checkpoints", "evaluate_model", "answer_winrate", "judge_winrate",
               "build_teacher_performance"}


@pytest.fixture(scope="module")
def wf(tmp_path_factory) -> Path:
    return copy_workflow(tmp_path_factory.mktemp("cli"))


@pytest.fixture()
def data(tmp_path) -> Path:
    f = tmp_path / "mine.jsonl"
    f.write_text(json.dumps({"instruction": "Say hi.", "output": "Hi!"}) + "\n")
    return f


def test_help_lists_the_commands():
    proc = subprocess.run([sys.executable, "-m", "teachfit.workflow.cli", "--help"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0
    for command in ("rank-teachers", "select-data", "run"):
        assert command in proc.stdout
    sub = subprocess.run([sys.executable, "-m", "teachfit.workflow.cli", "select-data", "--help"], capture_output=True,
                         text=True, check=True)
    assert "--top-percent" in sub.stdout and "--profile" in sub.stdout and "--student" in sub.stdout


def test_console_script_is_declared():
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["scripts"]["teachfit"] == "teachfit.workflow.cli:main"


@pytest.mark.parametrize(("args", "message"), [
    # a missing file
    (["select-data", "--data", "{tmp}/nope.jsonl", "--student", "tiny_base"],
     "--data: {tmp}/nope.jsonl: file does not exist"),
    (["rank-teachers", "--add-dataset", "mine={tmp}/nope.jsonl"], "--add-dataset mine: {tmp}/nope.jsonl: file does not exist"),
    (["run", "--configfile", "{tmp}/nope.yaml"], "--configfile {tmp}/nope.yaml: file does not exist"),
    # a wrong column name
    (["select-data", "--data", "{data}", "--student", "tiny_base", "--response-field", "answer"],
     ("no record has the response field 'answer' (config key response_field, CLI --response-field); "
      "fields in the file: instruction, output")),
    (["select-data", "--data", "{data}", "--student", "tiny_base", "--format", "messages"],
     "no record has the messages field 'messages'"),
    # an empty data set
    (["select-data", "--data", "{tmp}/empty.jsonl", "--student", "tiny_base"], "the data set is empty (no records)"),
    (["select-data", "--data", "{tmp}/blank.jsonl", "--student", "tiny_base"],
     "no usable (instruction, response) row in 1 records ({'empty_response': 1})"),
    # a model alias not in the config
    (["select-data", "--data", "{data}", "--student", "gpt9"],
     ("--student gpt9: no model 'gpt9' in the config; models: gemma270m, minilm, smollm2, tiny_base, "
      "tiny_enc, tiny_inst")),
    (["rank-teachers", "--bases", "gpt9"], "--bases gpt9: no model 'gpt9' in the config"),
    (["rank-teachers", "--generators", "t_greedy,nobody"], "--generators nobody: no generator 'nobody'"),
    # other mistakes
    (["select-data", "nosuch"], "no select_data entry 'nosuch' in the config"),
    (["select-data", "--data", "{data}"], "--data needs --student ALIAS"),
    (["select-data", "--data", "{data}", "--student", "tiny_base", "--top-percent", "0"],
     "config.select_data.mine.top_percent: 0.0 is less than or equal to the minimum of 0"),
    (["rank-teachers", "--add-dataset", "mine"], "--add-dataset 'mine': expected NAME=FILE"),
    (["rank-teachers", "--add-dataset", "t_greedy={data}"], "--add-dataset t_greedy: a generator of that name"),
])
def test_errors_before_snakemake_name_the_problem(wf, tmp_path, data, capsys, args, message):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text(json.dumps({"instruction": "q", "output": "  "}) + "\n")
    args = [a.replace("{tmp}", str(tmp_path)).replace("{data}", str(data)) for a in args]
    rc = main([*args, "-C", str(wf), *TINY])
    assert rc == 2
    err = capsys.readouterr().err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert err.startswith(f"teachfit {args[0]}: error: ")
    assert "Building DAG" not in err


def test_no_snakefile(tmp_path, capsys):
    assert main(["run", "-C", str(tmp_path)]) == 2
    assert "no Snakefile here" in capsys.readouterr().err


def test_rank_teachers_without_teacher_section(wf, tmp_path, capsys):
    bare = tmp_path / "bare"
    copy_workflow(bare)
    (bare / "config" / "config.yaml").write_text(
        "models: {m: {source: random}}\nseedsets: {s: {path: tests/data/tiny_seeds.jsonl}}\n")
    assert main(["rank-teachers", "-C", str(bare)]) == 2
    assert "rank-teachers needs the teacher section of the config (teacher.instructions" in capsys.readouterr().err


def test_snakemake_command_passes_options_through(tmp_path):
    args = Namespace(cores="3", profile="profiles/slurm", workflow_profile=None, dry_run=True,
                     snakemake_args=["--keep-going", "--rerun-triggers", "mtime"])
    cmd = snakemake_command(args, [tmp_path / "a.yaml"], tmp_path / "o.yaml", ["rank_teachers"])
    assert cmd[1:] == ["-m", "snakemake", "--cores", "3", "--configfile", str(tmp_path / "a.yaml"),
                       str(tmp_path / "o.yaml"), "--profile", "profiles/slurm", "-n", "--keep-going",
                       "--rerun-triggers", "mtime", "--", "rank_teachers"]


def _dry(wf: Path, capfd, *args: str) -> tuple[int, dict[str, int], str]:
    rc = main([*args, "-C", str(wf), "-n", "--cores", "1"])
    out = capfd.readouterr()
    return rc, planned_jobs(out.out + out.err), out.err


def test_rank_teachers_dry_run_has_no_sft_or_evaluation(wf, capfd, data):
    rc, jobs, err = _dry(wf, capfd, "rank-teachers", *TINY, "--add-dataset", f"mine={data}")
    assert rc == 0, err
    assert jobs["rank_teachers"] == 1 and jobs["import_responses"] == 1 and jobs["generate_responses"] == 3
    assert not SFT_OR_EVAL & set(jobs), jobs
    overlay = yaml.safe_load((wf / "results" / "cli" / "rank_teachers.yaml").read_text())
    assert overlay == {"teacher": {"ranking": {"activate": True, "measured": False},
                                   "generators": ["t_greedy", "t_best2", "t_fewshot", "mine"]},
                       "generators": {"mine": {"kind": "dataset", "dataset": {"path": str(data)}}}}
    assert "--configfile" in err and "rank_teachers.yaml -n -- rank_teachers" in err
    rc, jobs, _ = _dry(wf, capfd, "rank-teachers", *TINY, "--measured")
    assert rc == 0 and jobs["train_sft"] == 3 and jobs["build_teacher_performance"] == 1


def test_select_data_dry_run(wf, capfd, data):
    rc, jobs, err = _dry(wf, capfd, "select-data", *TINY, "--data", str(data), "--student", "tiny_base",
                         "--metric", "loss", "--top-percent", "20")
    assert rc == 0, err
    assert jobs == {"materialize_model": 1, "prepare_select_data": 1, "score_select_data": 1, "select_data": 1}
    overlay = yaml.safe_load((wf / "results" / "cli" / "select_data.mine.yaml").read_text())
    assert overlay == {"select_data": {"mine": {"path": str(data), "student": "tiny_base", "metric": "loss",
                                                "top_percent": 20.0}}}
    assert "-n -- results/select_data/mine/selected.jsonl results/tables/select_data_mine.csv" in err


def test_run_is_snakemake(wf, capfd):
    rc, jobs, _ = _dry(wf, capfd, "run", *TINY)
    assert rc == 0 and jobs["train_sft"] == 3 and jobs["rank_teachers"] == 1
