"""Data I/O: atomic writes, stable content-hash ids, Parquet with clear errors.

Every table the workflow writes goes through :func:`write_parquet` (temp file in
the same folder, then ``os.replace``), so an interrupted job never leaves a
half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import polars as pl


def package_data(*parts: str) -> Path:
    """Path of a file or folder shipped in ``teachfit/data/`` (schema, lm-eval tasks, ObjecQA,
    IFS prompts, AutoIF seed instructions), wherever the package is installed."""
    from importlib import resources

    return Path(str(resources.files("teachfit").joinpath("data", *parts)))


class DataError(ValueError):
    """Bad input data; the message names the file and the field."""


def content_id(*parts: Any, prefix: str = "", n: int = 16) -> str:
    """Stable id: sha256 over the JSON encoding of ``parts`` (first ``n`` hex chars)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    digest = hashlib.sha256(blob.encode("utf-8")).hexdigest()[:n]
    return f"{prefix}{digest}"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path next to ``path``; rename it onto ``path`` on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty folder ``.<name>.partial`` next to ``path``; on success it replaces
    ``path`` (an old ``path`` is removed first), on failure it is removed, so a crashed job
    never leaves a complete-looking output folder."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_parquet(df: pl.DataFrame, path: str | Path) -> Path:
    with atomic_path(path, ".parquet") as tmp:
        df.write_parquet(tmp)
    return Path(path)


def write_text(text: str, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(obj: Any, path: str | Path) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def write_csv(df: pl.DataFrame, path: str | Path) -> Path:
    with atomic_path(path, ".csv") as tmp:
        df.write_csv(tmp)
    return Path(path)


def read_parquet(path: str | Path, required: Sequence[str] = ()) -> pl.DataFrame:
    """Read a Parquet file; a missing, truncated or corrupt file raises DataError naming it."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # polars/arrow raise several types for corrupt input
        raise DataError(f"{path}: not a readable Parquet file (truncated or corrupt?): {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing required column(s) {missing}; has {df.columns}")
    return df


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: file does not exist") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not valid UTF-8 JSON: {exc}") from exc


def check_unicode(value: Any, where: str, field: str = "") -> None:
    """Raise :class:`DataError` ``"<where>: field <field> is not valid Unicode text"`` when a
    string anywhere in ``value`` (dict values and list items, recursively) holds a lone surrogate
    (JSON may escape one, ``"\\ud800"``; it cannot be written as UTF-8, tokenized or stored)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DataError(f"{where}: field {field or '(value)'!r} is not valid Unicode text "
                            f"({exc.reason} at character {exc.start})") from None
    elif isinstance(value, dict):
        for k, v in value.items():
            check_unicode(k, where, field)
            check_unicode(v, where, f"{field}.{k}" if field else str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_unicode(v, where, f"{field}[{i}]")


def jsonl_lines(text: str) -> Iterator[tuple[int, str]]:
    """``(line number, line)`` of JSONL ``text``, split at ``"\n"`` only (JSON Lines: a ``"\r"``
    before it is JSON whitespace). ``str.splitlines()`` would also split at U+2028, U+2029, U+0085
    and other separators that JSON allows raw inside strings (jsonlines#53)."""
    yield from enumerate(text.split("\n"), start=1)


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """Read JSON (a list), JSONL, or Parquet records; errors name the file and line.

    JSONL lines end at ``"\n"`` only (:func:`jsonl_lines`), so every file :func:`write_jsonl`
    writes reads back. Raises :class:`DataError` naming the file (and ``:line`` for JSONL,
    ``record i`` for a JSON list) for a missing file, text that is not UTF-8, malformed JSON, a
    record that is not an object, or a string holding a lone surrogate (:func:`check_unicode`).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist")
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix == ".parquet":
        return read_parquet(path).to_dicts()
    try:
        text = path.read_bytes().decode("utf-8-sig")  # a leading byte-order mark is dropped
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 text (byte {exc.start})") from exc
    if suffix == ".jsonl":
        records = []
        for lineno, line in jsonl_lines(text):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: malformed JSON line: {exc.msg}") from exc
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            check_unicode(rec, f"{path}:{lineno}")
            records.append(rec)
        return records
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: malformed JSON at line {exc.lineno}: {exc.msg}") from exc
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DataError(f"{path}: expected a JSON list of objects")
        for i, rec in enumerate(data):
            check_unicode(rec, f"{path}: record {i}")
        return data
    raise DataError(f"{path}: unsupported file type {suffix!r} (use .json, .jsonl or .parquet)")


def jsonl_text(records: Sequence[Any], where: str | Path = "JSONL") -> str:
    """One ``json.dumps(record, ensure_ascii=False)`` line per record, each ended by ``"\n"``:
    raw U+2028 / U+2029 / U+0085 stay inside their strings, ``"\r"`` / ``"\n"`` are escaped, so
    :func:`read_records` reads back the same records. Raises :class:`DataError` naming ``where``
    and the record for a string holding a lone surrogate (it cannot be written as UTF-8)."""
    for i, rec in enumerate(records):
        check_unicode(rec, f"{where}: record {i}")
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def write_jsonl(records: Sequence[Any], path: str | Path) -> Path:
    """Write :func:`jsonl_text` of ``records`` to ``path`` atomically."""
    return write_text(jsonl_text(records, path), path)


def read_table(path: str | Path) -> pl.DataFrame:
    """Parquet, JSONL or JSON records as a table (errors name the file)."""

    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return read_parquet(path)
    records = read_records(path)
    return pl.from_dicts(records, infer_schema_length=None) if records else pl.DataFrame()


def write_table(df: pl.DataFrame, path: str | Path) -> Path:
    """Write Parquet, or JSONL when the name ends in ``.jsonl`` (atomically, :func:`write_jsonl`)."""
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return write_jsonl(df.to_dicts(), path)
    return write_parquet(df, path)


def require_columns(df: pl.DataFrame, cols: Sequence[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise DataError(f"{what}: missing required column(s) {missing}; has {df.columns}")
