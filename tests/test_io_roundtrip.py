"""Issue 24, JSON/JSONL round trips: every reader of the project reads back what every writer of
the project writes, with the characters str.splitlines() splits at (U+2028, U+2029, U+0085, \\r)
kept inside their strings; a lone surrogate is a DataError naming the file and line/record."""

from __future__ import annotations

import json

import polars as pl
import pytest

from teachfit.evaluation.winrate_sets import read_benchmark_file
from teachfit.io import DataError, jsonl_text, read_records, write_jsonl, write_table
from teachfit.pairs import read_pairs
from teachfit.schema import defaults
from teachfit.seeds import load_seeds_with_counts
from teachfit.workflow.cli import CliError, check_source

SOURCE = defaults("generators.*", kind="dataset", dataset={"path": "x.jsonl"})["dataset"]
POEM = {"instruction": "Quote the poem.", "output": "Roses are red,\u2028violets are blue"}
AWKWARD = ["a\u2028b", "c\u2029d", "e\u0085f", "g\rh", "i\r\nj", "k\x0bl\x0cm\x1cn\x1do\x1ep", "tab\tend"]


def test_the_issue_case_reads_as_two_rows(tmp_path):
    """The record written with ensure_ascii=False (raw U+2028) plus another: two rows, exact text."""
    path = tmp_path / "poem.jsonl"
    path.write_text(json.dumps(POEM, ensure_ascii=False) + "\n"
                    + json.dumps({"instruction": "Say hi.", "output": "Hi!"}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    assert "\u2028" in path.read_text(encoding="utf-8")
    records = read_records(path)
    assert len(records) == 2 and records[0]["output"] == "Roses are red,\u2028violets are blue"
    pairs = read_pairs(path, SOURCE)
    assert pairs.height == 2 and pairs["response"].to_list() == [POEM["output"], "Hi!"]
    assert pairs["status"].to_list() == ["ok", "ok"]
    assert check_source(path, SOURCE, "test") == 2


@pytest.mark.parametrize("writer", ["write_jsonl", "write_table"])
def test_every_reader_reads_back_every_writer(tmp_path, writer):
    rows = [{"instruction": f"Q{i} {s}", "output": f"A{i} {s}", "uid": f"u{i}", "prompt": f"P{i} {s}"}
            for i, s in enumerate(AWKWARD)]
    path = tmp_path / "rows.jsonl"
    if writer == "write_jsonl":
        write_jsonl(rows, path)
    else:
        write_table(pl.DataFrame(rows), path)
    assert read_records(path) == rows
    pairs = read_pairs(path, SOURCE)
    assert pairs["response"].to_list() == [r["output"] for r in rows]
    seeds, _ = load_seeds_with_counts(path, "s", max_chars=None)
    assert sorted(seeds["instruction"].to_list()) == sorted(r["instruction"].strip() for r in rows)
    questions = read_benchmark_file(path, "arena_hard_questions", "instructions")
    assert questions["instruction"].to_list() == [r["prompt"] for r in rows]
    # JSON lists: the same strings
    as_json = tmp_path / "rows.json"
    as_json.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    assert read_records(as_json) == rows


def test_selected_jsonl_conversations_read_back(tmp_path):
    """select_data writes its kept pairs with write_jsonl; the file reads back as messages pairs."""
    conv = [{"messages": [{"role": "user", "content": s}, {"role": "assistant", "content": s[::-1]}]}
            for s in AWKWARD]
    path = write_jsonl(conv, tmp_path / "selected.jsonl")
    pairs = read_pairs(path, SOURCE)
    assert pairs["instruction"].to_list() == [s.strip() for s in AWKWARD]
    assert pairs["response"].to_list() == [s[::-1] for s in AWKWARD]


def _lone(tmp_path, name: str, second: bool = True):
    path = tmp_path / name
    lines = ['{"instruction": "fine", "output": "ok", "uid": "a", "prompt": "p"}',
             '{"instruction": "bad \\ud800 text", "output": "ok", "uid": "b", "prompt": "\\udc00"}']
    path.write_text("\n".join(lines if second else lines[1:]) + "\n", encoding="utf-8")
    return path


def test_lone_surrogates_are_data_errors_naming_file_and_line(tmp_path):
    path = _lone(tmp_path, "s.jsonl")
    where = rf"s\.jsonl:2: field 'instruction' is not valid Unicode text"
    with pytest.raises(DataError, match=where):
        read_records(path)
    with pytest.raises(DataError, match=where):
        read_pairs(path, SOURCE)
    with pytest.raises(DataError, match=where):
        load_seeds_with_counts(path, "s")
    with pytest.raises(CliError, match=where):
        check_source(path, SOURCE, "--add-dataset x")
    with pytest.raises(DataError, match=r"s\.jsonl:2: field '(instruction|prompt)' is not valid Unicode"):
        read_benchmark_file(path, "arena_hard_questions", "instructions")
    listed = tmp_path / "s.json"
    listed.write_text('[{"instruction": "x"}, {"instruction": "y", "input": "\\ud800"}]', encoding="utf-8")
    with pytest.raises(DataError, match=r"s\.json: record 1: field 'input' is not valid Unicode"):
        read_pairs(listed, SOURCE)
    with pytest.raises(DataError, match=r"out\.jsonl: record 1: field 'q' is not valid Unicode"):
        write_jsonl([{"q": "fine"}, {"q": "bad \ud800"}], tmp_path / "out.jsonl")
    assert not (tmp_path / "out.jsonl").exists()
    with pytest.raises(DataError, match="record 0: field 'messages\\[0\\].content'"):
        jsonl_text([{"messages": [{"content": "\udfff"}]}])
