from __future__ import annotations

import json
import logging
from pathlib import Path

import polars as pl
import pytest

from teachfit.schema import defaults
from teachfit.io import DataError, content_id, package_data
from teachfit.seeds import SEED_COLUMNS, load_seeds, load_seeds_with_counts, prepare_seeds

SEED_DIR = Path(__file__).resolve().parents[1] / "config" / "seeds"


def entry(path: Path, **kw) -> dict:
    """A ``seedsets.<name>`` entry with the schema's defaults, as rule prepare_seeds passes it."""
    return defaults("seedsets.*", path=str(path), **kw)


def _jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.mark.parametrize("name, low, high", [("general", 35, 60), ("math", 20, 40), ("code", 20, 40)])
def test_project_seed_sets_load_cleanly(name, low, high):
    df, counts = load_seeds_with_counts(SEED_DIR / f"{name}.jsonl", name)
    assert low <= df.height <= high
    assert counts.empty == 0 and counts.duplicate == 0 and counts.kept == df.height
    assert df.columns == list(SEED_COLUMNS)
    assert df["id"].n_unique() == df.height
    assert df["category"].null_count() == 0
    if name == "math":
        # every word problem has a numeric answer
        assert df["answer"].null_count() == 0
        assert all(float(a) >= 0 for a in df["answer"])


def test_autoif_seed_instruction_file_has_instructions():
    lines = [ln.strip() for ln in package_data("autoif_seed_instructions.txt").read_text().splitlines()]
    instructions = [ln for ln in lines if ln and not ln.startswith("#")]
    assert len(instructions) >= 10
    assert len(set(instructions)) == len(instructions)


def test_input_is_combined_and_ids_are_stable(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [
        {"instruction": "Translate.", "input": "Good morning", "category": "t"},
        {"instruction": "  Say hi.  ", "output": "hi"},
    ])
    df = load_seeds(path, "demo")
    assert df["instruction"].to_list() == ["Translate.\n\nGood morning", "Say hi."]
    assert df["id"][0] == content_id("demo", "Translate.\n\nGood morning")
    assert df["seedset"].to_list() == ["demo", "demo"]
    assert df["source_file"][0] == str(path) and df["source_index"].to_list() == [0, 1]
    assert df["output"].to_list() == [None, "hi"]
    # same content under another seed-set name gets another id; a reload gives the same ids
    assert load_seeds(path, "other")["id"][0] != df["id"][0]
    assert load_seeds(path, "demo")["id"].to_list() == df["id"].to_list()


def test_json_and_parquet_inputs_and_custom_fields(tmp_path):
    recs = [{"prompt": "A?", "context": "ctx"}, {"prompt": "B?"}]
    (tmp_path / "s.json").write_text(json.dumps(recs))
    pl.DataFrame({"prompt": ["A?", "B?"], "context": ["ctx", None]}).write_parquet(tmp_path / "s.parquet")
    a = load_seeds(tmp_path / "s.json", "x", instruction_field="prompt", input_field="context")
    b = load_seeds(tmp_path / "s.parquet", "x", instruction_field="prompt", input_field="context")
    assert a["instruction"].to_list() == ["A?\n\nctx", "B?"] == b["instruction"].to_list()
    assert a["id"].to_list() == b["id"].to_list()


def test_empty_and_duplicate_instructions_are_dropped_and_counted(tmp_path, caplog):
    path = _jsonl(tmp_path / "s.jsonl", [
        {"instruction": "One."}, {"instruction": "   "}, {"instruction": ""},
        {"instruction": None}, {"instruction": "One."}, {"instruction": "Two."},
        {"instruction": "One.", "input": "x"},
    ])
    df, counts = load_seeds_with_counts(path, "d")
    assert df["instruction"].to_list() == ["One.", "Two.", "One.\n\nx"]
    assert (counts.read, counts.kept, counts.empty, counts.duplicate) == (7, 3, 3, 1)
    with caplog.at_level(logging.INFO, logger="teachfit.seeds"):
        load_seeds(path, "d")
    assert "3 empty, 1 duplicate" in caplog.text


def test_limit_keeps_the_first_rows_and_counts_the_rest(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [{"instruction": f"Q{i}"} for i in range(5)])
    df, counts = load_seeds_with_counts(path, "d", limit=2)
    assert df["instruction"].to_list() == ["Q0", "Q1"] and counts.over_limit == 3


def test_malformed_file_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "ok"}\n{"instruction": "broken"\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2"):
        load_seeds(path, "d")
    with pytest.raises(DataError, match="does not exist"):
        load_seeds(tmp_path / "missing.jsonl", "d")
    (tmp_path / "s.csv").write_text("instruction\nx\n")
    with pytest.raises(DataError, match="unsupported file type"):
        load_seeds(tmp_path / "s.csv", "d")


def test_missing_instruction_field_names_field_and_record(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [{"instruction": "ok"}, {"question": "no instruction"}])
    with pytest.raises(DataError, match=r"record 1 has no field 'instruction'.*question"):
        load_seeds(path, "d")


def test_wrong_types_are_errors(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [{"instruction": ["a", "list"]}])
    with pytest.raises(DataError, match=r"record 0: field 'instruction' must be a string"):
        load_seeds(path, "d")
    path = _jsonl(tmp_path / "t.jsonl", [{"instruction": "ok", "input": {"a": 1}}])
    with pytest.raises(DataError, match=r"record 0: field 'input'"):
        load_seeds(path, "d")


def test_empty_instruction_list_is_an_error(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [{"instruction": "  "}, {"instruction": None}])
    with pytest.raises(DataError, match=r"no usable instructions.*2 empty"):
        load_seeds(path, "d")
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DataError, match="no usable instructions"):
        load_seeds(tmp_path / "e.jsonl", "d")


def test_prepare_seeds_writes_table_and_logs_counts(tmp_path, caplog):
    """The workflow's stage (``teachfit.seeds.prepare_seeds``): table written, drops counted."""
    path = _jsonl(tmp_path / "s.jsonl", [{"instruction": "A"}, {"instruction": "A"}])
    with caplog.at_level(logging.INFO, logger="teachfit.seeds"):
        df = prepare_seeds(path, tmp_path / "out.parquet", entry(path), "d")
    written = pl.read_parquet(tmp_path / "out.parquet")
    assert written.height == 1 and written.equals(df)
    assert "kept 1, dropped 0 empty, 1 duplicate" in caplog.text


def test_prepare_seeds_applies_the_seedset_entry(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [{"prompt": f"Q{i}", "context": "c" if i == 0 else None}
                                         for i in range(4)])
    df = prepare_seeds(path, tmp_path / "out.parquet",
                       entry(path, instruction_field="prompt", input_field="context", limit=2), "d")
    assert df["instruction"].to_list() == ["Q0\n\nc", "Q1"]
    assert pl.read_parquet(tmp_path / "out.parquet")["seedset"].to_list() == ["d", "d"]
    with pytest.raises(DataError, match="no field 'instruction'"):
        prepare_seeds(path, tmp_path / "x.parquet", entry(path), "d")
    assert not (tmp_path / "x.parquet").exists()


def test_offset_and_limit_split_one_file_into_disjoint_sets(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [
        {"instruction": "A"}, {"instruction": ""}, {"instruction": "B"}, {"instruction": "A"},
        {"instruction": "C"}, {"instruction": "D"}, {"instruction": "E"},
    ])
    train, c1 = load_seeds_with_counts(path, "train", limit=2)
    held, c2 = load_seeds_with_counts(path, "held", offset=2, limit=2)
    assert train["instruction"].to_list() == ["A", "B"]
    # the offset counts usable instructions only: the empty and the duplicate do not shift it
    assert held["instruction"].to_list() == ["C", "D"]
    assert held["source_index"].to_list() == [4, 5]
    assert (c2.skipped, c2.over_limit, c2.empty, c2.duplicate) == (2, 1, 1, 1)
    assert c1.skipped == 0
    with pytest.raises(DataError, match="5 skipped by offset"):
        load_seeds_with_counts(tmp_path / "s.jsonl", "x", offset=5)  # only 5 usable
    with pytest.raises(ValueError, match="offset must be >= 0"):
        load_seeds_with_counts(path, "x", offset=-1)


def test_prepare_seeds_passes_offset(tmp_path):
    path = _jsonl(tmp_path / "s.jsonl", [{"instruction": x} for x in "ABCD"])
    df = prepare_seeds(path, tmp_path / "out.parquet", entry(path, offset=3), "held")
    assert df["instruction"].to_list() == ["D"]
    assert pl.read_parquet(tmp_path / "out.parquet")["instruction"].to_list() == ["D"]
