"""Win-rate benchmark files (AlpacaEval's JSON, Arena-Hard's question and answer JSONL, both
layouts) read into instruction and reference tables; rule download_winrate_data with the hub
download stubbed. The files are small ones the tests write in each format."""

from __future__ import annotations

import json

import polars as pl
import pytest

from teachfit.evaluation.winrate_sets import download_winrate_data, read_benchmark_file
from teachfit.io import DataError

AE = [{"instruction": f"Write item {i}.", "output": f"Item {i} is written.", "generator": "gpt4_1106_preview",
       "dataset": "helpful_base"} for i in range(12)]


def _jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def test_alpaca_eval_file_gives_both_parts_aligned_by_position(tmp_path) -> None:
    path = tmp_path / "alpaca_eval_gpt4_baseline.json"
    path.write_text(json.dumps(AE))
    ins = read_benchmark_file(path, "alpaca_eval", "instructions")
    ref = read_benchmark_file(path, "alpaca_eval", "reference")
    assert ins.columns == ["id", "index", "instruction"] and ref.columns == ["id", "index", "response", "generator"]
    assert ins["id"].to_list()[:3] == ["000", "001", "002"] and ins["index"].to_list() == list(range(12))
    assert ins.join(ref, on="id")["response"].to_list() == [r["output"] for r in AE]
    assert ref["generator"].unique().to_list() == ["gpt4_1106_preview"]


def test_arena_hard_questions_in_both_layouts(tmp_path) -> None:
    old = _jsonl(tmp_path / "q_old.jsonl", [{"question_id": "abc", "category": "arena-hard-v0.1", "cluster": "c",
                                             "turns": [{"content": "Explain X."}]},
                                            {"question_id": "def", "turns": [{"content": "Explain Y."}]}])
    new = _jsonl(tmp_path / "q_new.jsonl", [{"uid": "abc", "category": "hard_prompt", "prompt": "Explain X."},
                                            {"uid": "def", "prompt": "Explain Y."}])
    for path in (old, new):
        df = read_benchmark_file(path, "arena_hard_questions", "instructions")
        assert df.to_dicts() == [{"id": "abc", "index": 0, "instruction": "Explain X."},
                                 {"id": "def", "index": 1, "instruction": "Explain Y."}]


def test_arena_hard_answers_in_both_layouts(tmp_path) -> None:
    old = _jsonl(tmp_path / "a_old.jsonl", [{"question_id": "abc", "answer_id": "x", "model_id": "gpt-4-0314",
                                             "choices": [{"index": 0, "turns": [{"content": "X is ...",
                                                                                 "token_len": 3}]}]}])
    new = _jsonl(tmp_path / "a_new.jsonl", [{"uid": "abc", "model": "gpt-4-0314", "messages": [
        {"role": "user", "content": "Explain X."}, {"role": "assistant", "content": {"answer": "X is ..."}}]}])
    plain = _jsonl(tmp_path / "a_plain.jsonl", [{"uid": "abc", "model": "gpt-4-0314", "messages": [
        {"role": "assistant", "content": "X is ..."}]}])
    for path in (old, new, plain):
        df = read_benchmark_file(path, "arena_hard_answers", "reference")
        assert df.to_dicts() == [{"id": "abc", "index": 0, "response": "X is ...", "generator": "gpt-4-0314"}]


@pytest.mark.parametrize(("fmt", "records", "message"), [
    ("arena_hard_questions", [{"question_id": "a", "turns": [{"content": "x"}, {"content": "y"}]}],
     "2 turns; only single-turn questions"),
    ("arena_hard_questions", [{"question_id": "a", "turns": [{"content": "  "}]}], r"q\.jsonl:1: turns\[0\]\.content"),
    ("arena_hard_questions", [{"uid": "a", "prompt": "x"}, {"uid": "a", "prompt": "y"}], r"duplicate ids \['a'\]"),
    ("arena_hard_questions", [{"id": "a", "prompt": "x"}], "neither 'uid' nor 'question_id'"),
    ("arena_hard_answers", [{"uid": "a", "messages": []}], r"q\.jsonl:1: 'messages' must be a non-empty list"),
    ("arena_hard_answers", [{"question_id": "a", "choices": []}], r"no choices\[0\]\.turns\[0\]\.content"),
])
def test_malformed_records_name_file_and_line(tmp_path, fmt, records, message) -> None:
    part = "instructions" if fmt == "arena_hard_questions" else "reference"
    path = _jsonl(tmp_path / "q.jsonl", records)
    with pytest.raises(DataError, match=message):
        read_benchmark_file(path, fmt, part)


def test_bad_json_format_and_part(tmp_path) -> None:
    (tmp_path / "q.jsonl").write_text('{"uid": "a", "prompt": "x"}\n{not json\n')
    with pytest.raises(DataError, match=r"q\.jsonl:2: not valid JSON"):
        read_benchmark_file(tmp_path / "q.jsonl", "arena_hard_questions", "instructions")
    (tmp_path / "ae.json").write_text(json.dumps([{"instruction": "x"}]))
    with pytest.raises(DataError, match=r"record 0: output"):
        read_benchmark_file(tmp_path / "ae.json", "alpaca_eval", "reference")
    with pytest.raises(ValueError, match="holds instructions, not reference"):
        read_benchmark_file(tmp_path / "q.jsonl", "arena_hard_questions", "reference")
    with pytest.raises(ValueError, match="format 'mt_bench' is not known"):
        read_benchmark_file(tmp_path / "q.jsonl", "mt_bench", "instructions")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no records"):
        read_benchmark_file(tmp_path / "empty.jsonl", "arena_hard_questions", "instructions")


def test_download_rule_with_the_hub_stubbed(tmp_path, monkeypatch) -> None:
    import huggingface_hub

    (tmp_path / "ae.json").write_text(json.dumps(AE))
    calls = []

    def fake(**kw):
        calls.append(kw)
        return str(tmp_path / "ae.json")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake)
    source = {"repo": "tatsu-lab/alpaca_eval", "repo_type": "dataset", "file": "alpaca_eval_gpt4_baseline.json",
              "revision": "abc123", "format": "alpaca_eval"}
    df = download_winrate_data(table=tmp_path / "out" / "instructions.parquet", source=source, part="instructions")
    assert calls == [{"repo_id": "tatsu-lab/alpaca_eval", "filename": "alpaca_eval_gpt4_baseline.json",
                      "repo_type": "dataset", "revision": "abc123"}]
    assert pl.read_parquet(tmp_path / "out" / "instructions.parquet").equals(df) and df.height == 12
