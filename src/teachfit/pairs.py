"""A user's (instruction, response) data set: read, normalise, and say which rows are usable.

Two layouts are read (``format``; ``auto`` picks ``messages`` when the messages field exists in
any record, else ``pairs``):

* ``pairs`` -- one record per example with an instruction field, an optional input field (appended
  to the instruction after a blank line, exactly as seed sets are combined by
  :func:`teachfit.seeds.combine`) and a response field (``response_field``; null = the first of
  :data:`RESPONSE_FIELDS` that exists), e.g. Alpaca's ``instruction`` / ``input`` / ``output``;
* ``messages`` -- one record per conversation, a list of ``{"role", "content"}`` turns (the
  conversational format of trl and HF data sets): an optional ``system`` turn, then one ``user``
  and one ``assistant`` turn.

Every record becomes one row of :func:`read_pairs`' table, with a ``status``: ``ok`` or the reason
it cannot be used (:data:`ROW_STATUSES`). Rows are never dropped here; the callers (the ``dataset``
generator kind, rule ``select_data``) count every non-``ok`` row in their logs and tables.

Errors that mean the file is not what the config says -- no file, no rows, a field that no record
has (a wrong column name), a value of the wrong type, a turn without ``role``/``content`` -- raise
:class:`~teachfit.io.DataError` naming the file, the record and the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.io import DataError, read_records
from teachfit.seeds import combine

#: Response fields tried, in order, when ``response_field`` is null.
RESPONSE_FIELDS = ("response", "output", "completion")

#: Why a row is not usable (``ok`` = usable).
ROW_STATUSES = {
    "ok": "usable",
    "empty_instruction": "the instruction (user turn) is missing, null or blank",
    "empty_response": "the response (assistant turn) is missing, null or blank",
    "multi_turn": "more than one user or assistant turn (only single-turn conversations are scored)",
    "incomplete_conversation": "no user turn, no assistant turn, or the assistant speaks first",
    "unsupported_role": "a turn with a role other than system, user, assistant",
}

#: Columns of :func:`read_pairs`' table.
PAIR_COLUMNS = {
    "source_index": pl.Int64,
    "source_id": pl.String,
    "instruction": pl.String,
    "response": pl.String,
    "system": pl.String,
    "status": pl.String,
}


def _text(value: Any, path: Path, index: int, field: str) -> str | None:
    """A string field's value (None when null); other types raise DataError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str):
        raise DataError(f"{path}: record {index}: field {field!r} must be a string, got "
                        f"{type(value).__name__} ({str(value)[:60]!r})")
    return value


def _blank(text: str | None) -> bool:
    return text is None or not text.strip()


def detect_format(records: list[Mapping[str, Any]], entry: Mapping[str, Any], path: Path) -> str:
    """``pairs`` or ``messages`` for ``entry["format"]`` (``auto``: messages when any record has
    ``entry["messages_field"]``)."""
    fmt = entry["format"]
    if fmt != "auto":
        return fmt
    return "messages" if any(entry["messages_field"] in r for r in records) else "pairs"


def _columns(records: list[Mapping[str, Any]]) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        seen.update(dict.fromkeys(r))
    return list(seen)


def _require_field(field: str, columns: list[str], path: Path, what: str, option: str) -> None:
    if field not in columns:
        raise DataError(f"{path}: no record has the {what} field {field!r} (config key {option}, CLI "
                        f"--{option.replace('_', '-')}); "
                        f"fields in the file: {', '.join(columns) or '(none)'}")


def response_field(records: list[Mapping[str, Any]], entry: Mapping[str, Any], path: Path) -> str:
    """The response field of a ``pairs`` file: ``entry["response_field"]``, or (null) the first of
    :data:`RESPONSE_FIELDS` that some record has."""
    columns = _columns(records)
    if entry["response_field"] is not None:
        _require_field(entry["response_field"], columns, path, "response", "response_field")
        return entry["response_field"]
    for name in RESPONSE_FIELDS:
        if name in columns:
            return name
    raise DataError(f"{path}: no response field: none of {list(RESPONSE_FIELDS)} is in the file "
                    f"(config key response_field, CLI --response-field); fields in the file: {', '.join(columns) or '(none)'}")


def _from_messages(turns: Any, path: Path, index: int, field: str) -> dict[str, Any]:
    """instruction / response / system / status of one conversation."""
    if turns is None:
        return {"instruction": None, "response": None, "system": None, "status": "incomplete_conversation"}
    if not isinstance(turns, (list, tuple)):
        raise DataError(f"{path}: record {index}: field {field!r} must be a list of "
                        f"{{role, content}} turns, got {type(turns).__name__}")
    roles, texts = [], []
    for k, turn in enumerate(turns):
        if not isinstance(turn, Mapping) or "role" not in turn or "content" not in turn:
            keys = sorted(turn) if isinstance(turn, Mapping) else type(turn).__name__
            raise DataError(f"{path}: record {index}: {field}[{k}] must have 'role' and 'content' (got {keys}); "
                            "ShareGPT-style 'from'/'value' turns must be converted to role/content")
        roles.append(_text(turn["role"], path, index, f"{field}[{k}].role"))
        texts.append(_text(turn["content"], path, index, f"{field}[{k}].content"))
    if roles[:1] == ["system"]:
        system, body_roles, body_texts = texts[0], roles[1:], texts[1:]
    else:
        system, body_roles, body_texts = None, roles, texts
    status = "ok"
    if any(r not in ("system", "user", "assistant") for r in roles) or "system" in body_roles:
        status = "unsupported_role"
    elif body_roles.count("user") > 1 or body_roles.count("assistant") > 1:
        status = "multi_turn"
    elif body_roles != ["user", "assistant"]:
        status = "incomplete_conversation"
    instruction = body_texts[0] if status == "ok" else None
    response = body_texts[1] if status == "ok" else None
    if status == "ok" and _blank(instruction):
        status = "empty_instruction"
    elif status == "ok" and _blank(response):
        status = "empty_response"
    return {"instruction": instruction.strip() if status == "ok" else instruction,
            "response": response, "system": system, "status": status}


def read_pairs(path: str | Path, entry: Mapping[str, Any]) -> pl.DataFrame:
    """Every record of a user data set as one (instruction, response) row with a ``status``.

    ``entry`` holds the validated source fields of a ``generators.<name>.dataset`` or
    ``select_data.<name>`` entry (``format``, ``instruction_field``, ``input_field``,
    ``response_field``, ``messages_field``, optional ``id_field``). ``path`` is a JSON (list of
    objects), JSONL or Parquet file (:func:`teachfit.io.read_records`).

    Returns a table with :data:`PAIR_COLUMNS`, one row per record in file order:
    ``source_index`` (0-based record number), ``source_id`` (the ``id_field`` value as a string,
    null without one), ``instruction`` (pairs: :func:`teachfit.seeds.combine` of instruction and
    input, outer whitespace stripped -- the text seed sets hold, so an exact join works; messages:
    the user turn, stripped), ``response`` (as in the file, not stripped), ``system`` (messages: the
    system turn, else null) and ``status`` (``ok`` or a key of :data:`ROW_STATUSES`).

    Raises :class:`~teachfit.io.DataError` naming the file (and record, field) when the file does
    not exist or cannot be read, has no records, no record has a configured field, or a value has
    the wrong type.
    """
    path = Path(path)
    records = read_records(path)  # DataError: missing, unreadable (names file and line)
    if not records:
        raise DataError(f"{path}: the data set is empty (no records)")
    fmt = detect_format(records, entry, path)
    columns = _columns(records)
    id_field = entry.get("id_field")
    rows: list[dict[str, Any]] = []
    if fmt == "messages":
        _require_field(entry["messages_field"], columns, path, "messages", "messages_field")
        for index, rec in enumerate(records):
            rows.append({"source_index": index,
                         **_from_messages(rec.get(entry["messages_field"]), path, index, entry["messages_field"])})
    else:
        _require_field(entry["instruction_field"], columns, path, "instruction", "instruction_field")
        resp_field = response_field(records, entry, path)
        for index, rec in enumerate(records):
            raw = _text(rec.get(entry["instruction_field"]), path, index, entry["instruction_field"])
            extra = _text(rec.get(entry["input_field"]), path, index, entry["input_field"])
            response = _text(rec.get(resp_field), path, index, resp_field)
            status = "empty_instruction" if _blank(raw) else "empty_response" if _blank(response) else "ok"
            rows.append({"source_index": index, "instruction": None if _blank(raw) else combine(raw, extra),
                         "response": response, "system": None, "status": status})
    for rec, row in zip(records, rows):
        value = rec.get(id_field) if id_field else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, (str, int))):
            raise DataError(f"{path}: record {row['source_index']}: field {id_field!r} must be a string "
                            f"or an integer, got {type(value).__name__}")
        row["source_id"] = None if value is None else str(value)
    return pl.DataFrame(rows, schema=PAIR_COLUMNS)


def status_counts(pairs: pl.DataFrame) -> dict[str, int]:
    """``{status: rows}`` of a :func:`read_pairs` table, every status of :data:`ROW_STATUSES` listed."""
    counts = dict.fromkeys(ROW_STATUSES, 0)
    for status, n in pairs.group_by("status").len().iter_rows():
        counts[status] = int(n)
    return counts
