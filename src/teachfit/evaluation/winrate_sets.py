"""Win-rate benchmark data from the hub: instructions and reference outputs; rule
``download_winrate_data`` (clusters with network only).

A benchmark source ``{hub: {repo, repo_type, file, revision, format}}`` names one file of a hub
repository; :func:`download_winrate_data` fetches it with ``huggingface_hub.hf_hub_download`` and
:func:`read_benchmark_file` turns it into the tables the win-rate rules read:

* instructions: Parquet ``id``, ``index`` (position in the file, 0-based), ``instruction``;
* reference outputs: Parquet ``id``, ``index``, ``response``, ``generator``.

Formats:

* ``alpaca_eval``: AlpacaEval's JSON list of ``{instruction, output, generator, dataset}``
  records, e.g. ``alpaca_eval_gpt4_baseline.json`` of the data set ``tatsu-lab/alpaca_eval`` (the
  file behind its config ``alpaca_eval_gpt4_baseline``, split ``eval``: 805 instructions with
  ``gpt4_turbo``'s outputs, generator ``gpt4_1106_preview``). ``id`` is the zero-padded position,
  so the instructions and the reference outputs read from the same file join row by row. (The data
  set is a loading-script data set, which ``datasets>=4`` refuses to load, so the JSON file is
  read directly.)
* ``arena_hard_questions``: Arena-Hard's ``question.jsonl``; v0.1-era lines
  ``{question_id, category, cluster, turns: [{content}]}`` or current lines ``{uid, category,
  prompt}`` (``lmarena-ai/arena-hard-auto``, ``data/arena-hard-v0.1/question.jsonl``: 500
  questions). ``id`` = ``question_id`` / ``uid``. Multi-turn questions raise.
* ``arena_hard_answers``: Arena-Hard's model answers (``model_answer/gpt-4-0314.jsonl``);
  v0.1-era lines ``{question_id, model_id, choices: [{turns: [{content}]}]}`` or current lines
  ``{uid, model, messages: [..., {role: assistant, content: {answer} | str}]}``. ``generator`` =
  ``model_id`` / ``model``.

Errors name the file and the line (1-based) or record.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.io import DataError, check_unicode, jsonl_lines, write_parquet

log = logging.getLogger(__name__)

FORMATS = ("alpaca_eval", "arena_hard_questions", "arena_hard_answers")
PARTS = ("instructions", "reference")
FORMAT_PARTS = {"alpaca_eval": PARTS, "arena_hard_questions": ("instructions",),
                "arena_hard_answers": ("reference",)}


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: expected a non-empty string, got {str(value)[:80]!r}")
    return value


def _jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """``(line number, record)`` of a JSONL file; lines end at ``"\\n"`` only
    (:func:`teachfit.io.jsonl_lines`); a lone surrogate in a string is a DataError naming the line."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not valid UTF-8 text (byte {exc.start})") from None
    out = []
    for no, line in jsonl_lines(text):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{no}: not valid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{no}: expected a JSON object, got {type(rec).__name__}")
        check_unicode(rec, f"{path}:{no}")
        out.append((no, rec))
    return out


def _question(rec: dict[str, Any], where: str) -> tuple[str, str]:
    if "uid" in rec:
        return str(rec["uid"]), _text(rec.get("prompt"), f"{where}: prompt")
    if "question_id" in rec:
        turns = rec.get("turns")
        if not isinstance(turns, list) or not turns:
            raise DataError(f"{where}: 'turns' must be a non-empty list")
        if len(turns) > 1:
            raise DataError(f"{where}: {len(turns)} turns; only single-turn questions are supported")
        content = turns[0].get("content") if isinstance(turns[0], dict) else None
        return str(rec["question_id"]), _text(content, f"{where}: turns[0].content")
    raise DataError(f"{where}: neither 'uid' nor 'question_id' (not an Arena-Hard question)")


def _answer(rec: dict[str, Any], where: str) -> tuple[str, str, str]:
    if "uid" in rec:
        msgs = rec.get("messages")
        if not isinstance(msgs, list) or not msgs or not isinstance(msgs[-1], dict):
            raise DataError(f"{where}: 'messages' must be a non-empty list of turns")
        content = msgs[-1].get("content")
        if isinstance(content, dict):
            content = content.get("answer")
        return str(rec["uid"]), _text(content, f"{where}: messages[-1].content"), str(rec.get("model", ""))
    if "question_id" in rec:
        try:
            content = rec["choices"][0]["turns"][0]["content"]
        except (KeyError, IndexError, TypeError):
            raise DataError(f"{where}: no choices[0].turns[0].content") from None
        return str(rec["question_id"]), _text(content, f"{where}: choices[0].turns[0].content"), \
            str(rec.get("model_id", ""))
    raise DataError(f"{where}: neither 'uid' nor 'question_id' (not an Arena-Hard answer)")


def read_benchmark_file(path: str | Path, fmt: str, part: str) -> pl.DataFrame:
    """The ``part`` (``instructions`` or ``reference``) of a benchmark file in format ``fmt``
    (see the module docstring). Raises ``ValueError`` for an unknown format or a part the format
    does not hold, :class:`teachfit.io.DataError` naming the file and line for malformed records,
    empty texts or duplicate ids."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"benchmark format {fmt!r} is not known; allowed: {', '.join(FORMATS)}")
    if part not in FORMAT_PARTS[fmt]:
        raise ValueError(f"format {fmt!r} holds {' and '.join(FORMAT_PARTS[fmt])}, not {part}")
    rows: list[dict[str, Any]] = []
    if fmt == "alpaca_eval":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: not valid UTF-8 text (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
        width = max(3, len(str(len(data) - 1)))
        for i, rec in enumerate(data):
            where = f"{path}: record {i}"
            if not isinstance(rec, dict):
                raise DataError(f"{where}: expected an object")
            check_unicode(rec, where)
            row = {"id": f"{i:0{width}d}", "index": i}
            if part == "instructions":
                row["instruction"] = _text(rec.get("instruction"), f"{where}: instruction")
            else:
                row["response"] = _text(rec.get("output"), f"{where}: output")
                row["generator"] = str(rec.get("generator", ""))
            rows.append(row)
    else:
        for i, (no, rec) in enumerate(_jsonl(path)):
            where = f"{path}:{no}"
            if fmt == "arena_hard_questions":
                qid, text = _question(rec, where)
                rows.append({"id": qid, "index": i, "instruction": text})
            else:
                qid, text, model = _answer(rec, where)
                rows.append({"id": qid, "index": i, "response": text, "generator": model})
    if not rows:
        raise DataError(f"{path}: no records")
    df = pl.DataFrame(rows)
    dup = df.filter(pl.col("id").is_duplicated())["id"].unique().to_list()
    if dup:
        raise DataError(f"{path}: duplicate ids {sorted(dup)[:5]}")
    return df


def download_winrate_data(table: str | Path, source: dict[str, Any], part: str) -> pl.DataFrame:
    """Rule ``download_winrate_data``: fetch one benchmark file from the hub (``source`` = the
    ``hub`` entry of a benchmark's ``instructions`` or ``reference``: ``repo``, ``repo_type``,
    ``file``, ``revision``, ``format``) with ``huggingface_hub.hf_hub_download`` and write its
    ``part`` as Parquet ``table`` (:func:`read_benchmark_file`). Needs network (clusters)."""
    from huggingface_hub import hf_hub_download

    path = hf_hub_download(repo_id=source["repo"], filename=source["file"], repo_type=source["repo_type"],
                           revision=source["revision"])
    df = read_benchmark_file(path, source["format"], part)
    log.info("%s/%s (revision %s): %d %s", source["repo"], source["file"], source["revision"], df.height, part)
    write_parquet(df, table)
    return df
