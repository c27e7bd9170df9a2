"""Rule ``import_responses``: the responses of a ``dataset`` generator (an existing data set used as
a "teacher"), joined to a study's instructions and written as a generations table, so that they go
through the same rules as a model's (``score_rewards`` -> ``select_responses`` -> ``score_losses``
-> data metrics, CAR, ranking).

The join is by exact instruction text (the data set's instruction combined with its input exactly
as seed sets are, :func:`teachfit.pairs.read_pairs`) or by id (``id_field`` against the ids of
``results/instructions/<set>.parquet``). Nothing is dropped silently: the rows that match no study
instruction, the second and later rows for one instruction, the unusable rows (by reason) and the
study instructions without a response are counted in the job log and in the join report, which
rule ``rank_teachers`` copies into ``teacher_ranking.csv``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.io import DataError, read_parquet, write_json, write_parquet
from teachfit.pairs import read_pairs, status_counts

log = logging.getLogger(__name__)

#: Keys of the join report (besides ``generator``, ``source``, ``join``, ``unusable`` and examples).
JOIN_COUNTS = ("rows", "matched", "unmatched", "duplicate", "unusable_rows", "instructions", "missing")


def source_label(dataset: Mapping[str, Any]) -> str:
    """Where a dataset generator's rows come from, for tables: its path or ``hub:<id>[:split]``."""
    if dataset.get("path"):
        return str(dataset["path"])
    return f"hub:{dataset['hf_dataset']}:{dataset['hf_split']}"


def import_responses(instructions: str | Path, source: str | Path, generations: str | Path,
                     join_report: str | Path, name: str, dataset: Mapping[str, Any]) -> pl.DataFrame:
    """Rule ``import_responses``: dataset generator ``name``'s responses to the study's instructions.

    ``instructions`` is the study's instruction table (Parquet ``id``, ``instruction``, see
    :func:`teachfit.seeds.prepare_seeds`); ``source`` the data set file (the configured ``path``,
    or the hub data set downloaded by rule ``download_generator_dataset``); ``dataset`` the validated
    ``generators.<name>.dataset`` entry (format and fields, ``join``, ``duplicates``).

    Writes ``generations`` (Parquet), one row per matched instruction in the instruction table's
    order, with the instruction table's columns and the generation columns rules ``score_rewards``
    and ``select_responses`` read: ``sample_idx`` (0), ``prompt`` (null: no prompt was rendered),
    ``response`` (as in the file), ``n_response_tokens`` (null), ``finish_reason`` (``dataset``),
    ``generator`` (= ``name``), ``model`` (null), ``backend`` (``dataset``), ``prompt_format``
    (null), ``system`` (a messages row's system turn), ``response_source`` and
    ``response_source_index`` (file and 0-based record). Writes ``join_report`` (JSON): the
    :data:`JOIN_COUNTS` (``rows`` read, ``matched`` instructions, ``unmatched`` rows, ``duplicate``
    rows, ``unusable_rows`` and per reason ``unusable``, study ``instructions``, ``missing``
    instructions without a response), plus the first unmatched instructions and missing ids.

    Raises :class:`~teachfit.io.DataError` naming the file when it cannot be read or has no usable
    row (see :func:`teachfit.pairs.read_pairs`), when no row matches a study instruction, or (with
    ``duplicates: error``) when an instruction has several rows.
    """
    study = read_parquet(instructions, required=["id", "instruction"])
    pairs = read_pairs(source, dataset)
    counts = status_counts(pairs)
    usable = pairs.filter(pl.col("status") == "ok")
    if usable.height == 0:
        bad = {k: v for k, v in counts.items() if v and k != "ok"}
        raise DataError(f"{source}: no usable (instruction, response) row in {pairs.height} records ({bad})")
    join = dataset["join"]
    if join == "id":
        if usable["source_id"].null_count() == usable.height:
            raise DataError(f"{source}: join: id needs the id field {dataset['id_field']!r} in the rows "
                            "(the ids of the study's instruction table); none has it")
        key, study_key = pl.col("source_id"), "id"
    else:
        key, study_key = pl.col("instruction"), "instruction"
    known = set(study[study_key].to_list())
    usable = usable.with_columns(key.alias("_key"))
    matched_rows = usable.filter(pl.col("_key").is_in(list(known)))
    unmatched = usable.filter(~pl.col("_key").is_in(list(known)))
    first = matched_rows.unique("_key", keep="first", maintain_order=True)
    n_duplicate = matched_rows.height - first.height
    if n_duplicate and dataset["duplicates"] == "error":
        dup = matched_rows.filter(pl.col("_key").is_duplicated())["source_index"].to_list()
        raise DataError(f"{source}: {n_duplicate} duplicate row(s) for one instruction (records {dup[:10]}); "
                        "set duplicates: first to keep the first row of each")
    responses = first.select(
        pl.col("_key").alias(study_key), "response", "system",
        pl.col("source_index").alias("response_source_index"))
    out = study.join(responses, on=study_key, how="inner", maintain_order="left")
    missing = study.filter(~pl.col(study_key).is_in(first["_key"].implode()))
    out = out.with_columns(
        pl.lit(0, dtype=pl.Int64).alias("sample_idx"),
        pl.lit(None, dtype=pl.String).alias("prompt"),
        pl.lit(None, dtype=pl.Int64).alias("n_response_tokens"),
        pl.lit("dataset").alias("finish_reason"),
        pl.lit(name).alias("generator"),
        pl.lit(None, dtype=pl.String).alias("model"),
        pl.lit("dataset").alias("backend"),
        pl.lit(None, dtype=pl.String).alias("prompt_format"),
        pl.lit(source_label(dataset)).alias("response_source"),
    )
    report = {
        "generator": name, "source": source_label(dataset), "join": join,
        "rows": pairs.height, "matched": out.height, "unmatched": unmatched.height,
        "duplicate": n_duplicate, "unusable_rows": pairs.height - usable.height,
        "unusable": {k: v for k, v in counts.items() if k != "ok"},
        "instructions": study.height, "missing": missing.height,
        "unmatched_examples": [str(v)[:120] for v in unmatched["_key"].head(5).to_list()],
        "missing_ids": missing["id"].head(20).to_list(),
    }
    level = logging.WARNING if report["unmatched"] or report["duplicate"] or report["missing"] \
        or report["unusable_rows"] else logging.INFO
    log.log(level, "dataset generator %s (%s, join by %s): %d rows read; %d of %d study instructions "
            "matched, %d missing; %d rows unmatched, %d duplicate, %d unusable %s",
            name, report["source"], join, report["rows"], report["matched"], report["instructions"],
            report["missing"], report["unmatched"], report["duplicate"], report["unusable_rows"],
            {k: v for k, v in report["unusable"].items() if v})
    for text in report["unmatched_examples"]:
        log.info("unmatched row (first 120 characters): %r", text)
    if out.height == 0:
        raise DataError(f"{source}: none of its {usable.height} usable rows matches an instruction of "
                        f"{instructions} by {join} (first unmatched: {report['unmatched_examples'][:2]})")
    write_json(report, join_report)
    write_parquet(out, generations)
    return out
