"""Stage: a configured seed file -> results/instructions/{seedset}.parquet."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.io import write_parquet

log = logging.getLogger(__name__)


def prepare_seeds(source: str | Path, name: str, entry: dict[str, Any],
                  out_path: str | Path) -> pl.DataFrame:
    from teachfit.seeds import load_seeds

    df = load_seeds(
        source,
        name,
        instruction_field=entry.get("instruction_field", "instruction"),
        input_field=entry.get("input_field", "input"),
        limit=entry.get("limit"),
        offset=entry.get("offset", 0),
    )
    log.info("seed set %s: %d instructions from %s", name, df.height, source)
    write_parquet(df, out_path)
    return df


def download_seedset(entry: dict[str, Any], out_path: str | Path) -> pl.DataFrame:
    """Fetch a hub data set (clusters with network) into a raw Parquet file."""
    from datasets import load_dataset

    ds = load_dataset(entry["hf_dataset"], entry.get("hf_config"), split=entry.get("hf_split", "train"),
                      revision=entry.get("hf_revision"))
    df = pl.from_arrow(ds.data.table)
    log.info("downloaded %s (%d rows)", entry["hf_dataset"], df.height)
    write_parquet(df, out_path)
    return df
