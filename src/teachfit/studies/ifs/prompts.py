"""IFS prompts: instructions shown whole or as fragments, in the paper's three formats
(AlShikh et al. 2023: settings A = ``alpaca``, B = ``suffix``, C = ``none``).

Rule :func:`make_ifs_prompts`; :func:`build_ifs_requests` turns the set into the exact strings
the answer rules send to a model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import (
    DataError,
    package_data,
    read_records,
    require_columns,
    write_parquet,
)
from teachfit.settings import from_dict as settings_from_dict
from teachfit.studies.ifs.tone import _round_half_up, _word_ends

log = logging.getLogger(__name__)


IFS_FORMATS = ("none", "suffix", "alpaca")


ALPACA_PREAMBLE = (
    "Below is an instruction that describes a task. "
    "Write a response that appropriately completes the request.\n\n"
)


RESPONSE_SUFFIX = "\n\n### Response:"


def format_ifs_prompt(text: str, fmt: str) -> str:
    """The paper's prompt settings: ``none`` (C: the text), ``suffix`` (B: text +
    ``"\\n\\n### Response:"``), ``alpaca`` (A: the Alpaca preamble, ``### Instruction:``
    block and ``### Response:``)."""
    if not isinstance(text, str):
        raise TypeError(f"format_ifs_prompt: text must be a str, got {type(text).__name__}")
    if fmt == "none":
        return text
    if fmt == "suffix":
        return text + RESPONSE_SUFFIX
    if fmt == "alpaca":
        return f"{ALPACA_PREAMBLE}### Instruction:\n{text}{RESPONSE_SUFFIX}"
    raise ValueError(f"IFS prompt format {fmt!r} is not known; allowed: {', '.join(IFS_FORMATS)}")


def load_ifs_instructions(path: str | Path | None = None) -> pl.DataFrame:
    """The IFS instruction set (``id``, ``category``, ``instruction``); default: the packaged
    ``teachfit/data/ifs_prompts.jsonl`` (62 instructions written for this project)."""
    if path is None:
        path = package_data("ifs_prompts.jsonl")
    recs = read_records(path)
    for i, r in enumerate(recs, start=1):
        for key in ("id", "instruction"):
            if not isinstance(r.get(key), str) or not r[key].strip():
                raise DataError(f"{path}: record {i} has no non-empty string field {key!r}")
    df = pl.DataFrame(recs)
    if df["id"].n_unique() != df.height:
        raise DataError(f"{path}: ids are not unique")
    return df


@dataclass
class IfsPromptSettings:
    """How the IFS prompt set is built and answered (config ``ifs.prompts``).

    No field has a default: the config schema holds them (``defaults("ifs.prompts")``).
    """

    path: str | None = field(metadata={"help": "instruction file (null = the package's own set); "
                                               "the rule reads it as its declared input"})
    partial_share: float = field(metadata={"help": "share of instructions shown as a fragment"})
    min_frac: float = field(metadata={"help": "partial: least share of words kept"})
    max_frac: float = field(metadata={"help": "partial: largest share of words kept"})
    formats: tuple[str, ...] = field(
        metadata={"help": "prompt formats to evaluate", "choices": IFS_FORMATS},
    )
    limit: int | None = field(metadata={"help": "use the first N instructions (by file order)"})
    max_new_tokens: int = field(metadata={"help": "tokens generated per IFS prompt"})

    def __post_init__(self) -> None:
        self.formats = tuple(self.formats)
        if not 0.0 <= self.partial_share <= 1.0:
            raise ValueError(f"ifs_prompts.partial_share: must be in [0, 1], got {self.partial_share}")
        if not 0.0 < self.min_frac <= self.max_frac < 1.0:
            raise ValueError(
                "ifs_prompts: need 0 < min_frac <= max_frac < 1, got "
                f"{self.min_frac}, {self.max_frac}"
            )
        bad = [f for f in self.formats if f not in IFS_FORMATS]
        if bad or not self.formats:
            raise ValueError(
                f"ifs_prompts.formats: {bad or 'empty'} not allowed; allowed: {', '.join(IFS_FORMATS)}"
            )
        if self.limit is not None and int(self.limit) < 1:
            raise ValueError(f"ifs_prompts.limit: must be >= 1 or null, got {self.limit}")
        if int(self.max_new_tokens) < 1:
            raise ValueError(f"ifs_prompts.max_new_tokens: must be >= 1, got {self.max_new_tokens}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> IfsPromptSettings:
        return settings_from_dict(cls, d, "ifs_prompts")


def ifs_prompt_set(
    instructions_df: pl.DataFrame,
    partial_share: float,
    min_frac: float,
    max_frac: float,
    seed: int,
) -> pl.DataFrame:
    """Present each instruction once, whole (``full``) or as a word-level prefix (``partial``).

    Rule: rows are ordered by ``id``; ``rng = numpy.random.default_rng(seed)``; the first
    ``floor(partial_share*n + 0.5)`` entries of ``rng.permutation(n)`` are partial. Then, for
    the partial rows in id order, ``f = rng.uniform(min_frac, max_frac)`` and the prefix keeps
    ``k = clip(floor(f*w + 0.5), 1, w - 1)`` of the instruction's ``w`` words (``\\S+`` runs;
    the text up to the end of word k, original whitespace kept). An instruction picked as
    partial must have >= 2 words (else :class:`DataError`). Returns ``n`` rows, columns: ``id``
    (``<source_id>__<variant>``), ``source_id``, ``variant``, ``text``, ``n_words``,
    ``kept_words`` (+ ``category`` when present). Source: AlShikh et al. 2023
    (partial and full instructions).
    """
    if not 0.0 <= partial_share <= 1.0 or not 0.0 < min_frac <= max_frac < 1.0:
        raise ValueError(f"IFS prompts: need partial_share in [0, 1] and 0 < min_frac <= max_frac < 1; "
                         f"got {partial_share}, {min_frac}, {max_frac}")
    require_columns(instructions_df, ["id", "instruction"], "IFS instructions")
    df = instructions_df.sort("id")
    if df["id"].n_unique() != df.height:
        raise DataError("IFS instructions: ids are not unique")
    n = df.height
    rng = np.random.default_rng(seed)
    n_partial = _round_half_up(partial_share * n)
    partial = set(rng.permutation(n)[:n_partial].tolist())
    rows = []
    cats = df["category"].to_list() if "category" in df.columns else [None] * n
    for i, (sid, ins, cat) in enumerate(zip(df["id"].to_list(), df["instruction"].to_list(), cats)):
        if not isinstance(ins, str):
            raise DataError(f"IFS instructions: {sid!r} has a non-string instruction")
        ends = _word_ends(ins)
        w = len(ends)
        if i in partial:
            if w < 2:
                raise DataError(f"IFS instructions: {sid!r} has {w} word(s); a partial prompt needs >= 2")
            f = rng.uniform(min_frac, max_frac)
            k = min(max(_round_half_up(f * w), 1), w - 1)
            rows.append({"id": f"{sid}__partial", "source_id": str(sid), "variant": "partial",
                             "text": ins[:ends[k - 1]].strip(), "n_words": w, "kept_words": k, "category": cat})
        else:
            rows.append({"id": f"{sid}__full", "source_id": str(sid), "variant": "full",
                             "text": ins.strip(), "n_words": w, "kept_words": w, "category": cat})
    out = pl.DataFrame(rows, schema={"id": pl.String, "source_id": pl.String,
                                     "variant": pl.String, "text": pl.String,
                                     "n_words": pl.Int64, "kept_words": pl.Int64,
                                     "category": pl.String})
    return out if "category" in instructions_df.columns else out.drop("category")


def build_ifs_requests(prompts_df: pl.DataFrame, formats: Sequence[str] = IFS_FORMATS) -> pl.DataFrame:
    """One row per (prompt, format): the prompt columns plus ``fmt`` and ``prompt`` (the
    exact string given to the model, raw text: no chat template)."""
    require_columns(prompts_df, ["id", "variant", "text"], "IFS prompts")
    parts = []
    for fmt in formats:
        texts = [format_ifs_prompt(t, fmt) for t in prompts_df["text"].to_list()]
        parts.append(prompts_df.with_columns(pl.lit(fmt).alias("fmt"),
                                             pl.Series("prompt", texts, dtype=pl.String)))
    return pl.concat(parts)


def make_ifs_prompts(source: str | Path, prompts: str | Path, settings: Mapping[str, Any],
                     seed: int) -> pl.DataFrame:
    """Rule ``make_ifs_prompts``: the IFS prompt set from the instruction file ``source``.

    ``source``: a JSON / JSONL / Parquet file of ``id``, ``instruction`` (+ ``category``), the
    configured ``ifs.prompts.path`` or the packaged set; ``settings`` = config ``ifs.prompts``
    (its first ``limit`` instructions in file order are used); ``seed`` = the global seed.
    Writes :func:`ifs_prompt_set`'s table to ``prompts`` and returns it.
    """
    s = IfsPromptSettings.from_dict(settings)
    instructions = load_ifs_instructions(source)
    if s.limit:
        instructions = instructions.head(int(s.limit))
    out = ifs_prompt_set(instructions, s.partial_share, s.min_frac, s.max_frac, seed)
    write_parquet(out, prompts)
    return out
