"""Seed instruction sets: load, validate, deduplicate, give every row a stable id.

A seed file is JSON (a list of objects), JSONL or Parquet with at least an
instruction field; optional ``input`` (appended to the instruction after a
blank line), ``output``/``answer`` and ``category``. Empty or whitespace-only
instructions, exact duplicates (of the combined text) and instructions longer
than ``max_chars`` characters are dropped and *counted*:
:func:`load_seeds_with_counts` returns the counts and :func:`load_seeds` logs them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.io import DataError, content_id, read_records, write_parquet

log = logging.getLogger(__name__)

#: Longest instruction (+ input) kept, in characters (~8k tokens: more than the context
#: of the small models, and no seed set of the three papers comes close).
MAX_CHARS = 32_000

#: Columns of every seed table, in order.
SEED_COLUMNS = (
    "id", "instruction", "raw_instruction", "input", "output", "answer", "category",
    "seedset", "source_file", "source_index",
)


@dataclass(frozen=True)
class SeedCounts:
    read: int
    kept: int
    empty: int
    duplicate: int
    over_limit: int
    too_long: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def combine(instruction: str, input_text: str | None) -> str:
    """The text a model sees: instruction, then the input (if any) after a blank line."""
    instruction = instruction.strip()
    if input_text is None or not str(input_text).strip():
        return instruction
    return f"{instruction}\n\n{str(input_text).strip()}"


def _check_unicode(value: str, field: str, path: Path, index: int) -> str:
    """JSON may escape lone surrogates (``"\\ud800"``); they cannot be written as UTF-8."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise DataError(
            f"{path}: record {index}: field {field!r} is not valid Unicode text "
            f"({exc.reason} at character {exc.start})"
        ) from exc
    return value


def _optional_str(rec: dict[str, Any], field: str, path: Path, index: int) -> str | None:
    value = rec.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DataError(
            f"{path}: record {index}: field {field!r} must be a string, got {type(value).__name__}"
        )
    return _check_unicode(str(value), field, path, index)


def load_seeds_with_counts(
    path: str | Path,
    name: str,
    instruction_field: str = "instruction",
    input_field: str = "input",
    limit: int | None = None,
    max_chars: int | None = MAX_CHARS,
    offset: int = 0,
) -> tuple[pl.DataFrame, SeedCounts]:
    """Load a seed set; return the table and the drop counts (see module doc).

    ``offset`` skips the first N usable instructions (after dropping empties,
    over-long ones and duplicates) before ``limit`` applies, so two seed sets
    over one file can be disjoint (e.g. a training split and a held-out split).
    """
    path = Path(path)
    if limit is not None and limit < 1:
        raise ValueError(f"seeds.{name}.limit must be >= 1 or null, got {limit}")
    if offset < 0:
        raise ValueError(f"seeds.{name}.offset must be >= 0, got {offset}")
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"seeds.{name}.max_chars must be >= 1 or null, got {max_chars}")
    records = read_records(path)  # DataError names the file (and line for JSONL)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    empty = duplicate = over_limit = too_long = skipped = 0
    for index, rec in enumerate(records):
        if instruction_field not in rec:
            raise DataError(
                f"{path}: record {index} has no field {instruction_field!r} "
                f"(fields: {sorted(rec)}); set instruction_field for this seed set"
            )
        raw = rec[instruction_field]
        if raw is not None and not isinstance(raw, str):
            raise DataError(
                f"{path}: record {index}: field {instruction_field!r} must be a string, "
                f"got {type(raw).__name__}"
            )
        if raw is None or not raw.strip():
            empty += 1
            continue
        _check_unicode(raw, instruction_field, path, index)
        input_text = _optional_str(rec, input_field, path, index)
        text = combine(raw, input_text)
        if max_chars is not None and len(text) > max_chars:
            too_long += 1
            continue
        if text in seen:
            duplicate += 1
            continue
        seen.add(text)
        if skipped < offset:
            skipped += 1
            continue
        if limit is not None and len(rows) >= limit:
            over_limit += 1
            continue
        answer = _optional_str(rec, "answer", path, index)
        rows.append({
            "id": content_id(name, text),
            "instruction": text,
            "raw_instruction": raw.strip(),
            "input": input_text.strip() if input_text and input_text.strip() else None,
            "output": _optional_str(rec, "output", path, index),
            "answer": answer,
            "category": _optional_str(rec, "category", path, index),
            "seedset": name,
            "source_file": str(path),
            "source_index": index,
        })
    if not rows:
        raise DataError(
            f"{path}: no usable instructions in field {instruction_field!r} "
            f"({len(records)} records, {empty} empty, {duplicate} duplicate, "
            f"{too_long} longer than {max_chars} characters, {skipped} skipped by offset)"
        )
    counts = SeedCounts(read=len(records), kept=len(rows), empty=empty,
                        duplicate=duplicate, over_limit=over_limit, too_long=too_long,
                        skipped=skipped)
    schema = {c: pl.String for c in SEED_COLUMNS}
    schema["source_index"] = pl.Int64
    return pl.DataFrame(rows, schema=schema), counts


def load_seeds(
    path: str | Path,
    name: str,
    instruction_field: str = "instruction",
    input_field: str = "input",
    limit: int | None = None,
    max_chars: int | None = MAX_CHARS,
    offset: int = 0,
) -> pl.DataFrame:
    """Load a seed set (see :func:`load_seeds_with_counts`); drops are logged, never silent."""
    df, counts = load_seeds_with_counts(path, name, instruction_field, input_field, limit, max_chars,
                                        offset)
    level = logging.WARNING if counts.empty or counts.duplicate or counts.too_long else logging.INFO
    log.log(
        level,
        "seed set %s (%s): read %d, kept %d, dropped %d empty, %d duplicate, %d too long "
        "(> %s characters), %d skipped by offset, %d over limit",
        name, path, counts.read, counts.kept, counts.empty, counts.duplicate, counts.too_long,
        max_chars, counts.skipped, counts.over_limit,
    )
    return df


# ------------------------------------------------------------- rules prepare_seeds, download_seedset


def prepare_seeds(source: str | Path, instructions: str | Path, entry: dict[str, Any],
                  seedset: str) -> pl.DataFrame:
    """Rule ``prepare_seeds``: seed file ``source`` -> instruction table ``instructions`` (Parquet).

    ``entry`` is the validated ``seedsets.<seedset>`` entry (``instruction_field``,
    ``input_field``, ``offset``, ``limit``); ``seedset`` names the set (it seeds every row's
    stable ``id``). Columns: :data:`SEED_COLUMNS`; drops are counted and logged
    (:func:`load_seeds`). Raises :class:`~teachfit.io.DataError` naming the file (and record) on
    unreadable input, a missing instruction field or no usable instruction.
    """
    df = load_seeds(
        source,
        seedset,
        instruction_field=entry["instruction_field"],
        input_field=entry["input_field"],
        limit=entry["limit"],
        offset=entry["offset"],
    )
    log.info("seed set %s: %d instructions from %s", seedset, df.height, source)
    write_parquet(df, instructions)
    return df


def download_seedset(raw: str | Path, entry: dict[str, Any]) -> pl.DataFrame:
    """Rule ``download_seedset``: the hub data set of a ``seedsets.<name>`` entry (``hf_dataset``,
    ``hf_config``, ``hf_split``, ``hf_revision``) -> raw Parquet ``raw``, columns as on the hub.
    Needs network (clusters); ``prepare_seeds`` turns the file into instructions."""
    from datasets import load_dataset

    ds = load_dataset(entry["hf_dataset"], entry["hf_config"], split=entry["hf_split"],
                      revision=entry["hf_revision"])
    df = pl.from_arrow(ds.data.table)
    log.info("downloaded %s (%d rows)", entry["hf_dataset"], df.height)
    write_parquet(df, raw)
    return df
