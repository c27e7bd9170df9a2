"""The validity gate's quality on the project's labelled evolution replies, and its CLI.

``python -m teachfit.studies.evolver.gate_quality --judge DIR --out STEM`` (``make gate-quality``)
writes the precision and recall of the gate's "invalid" detection, without and with the judge,
overall and per drop reason, on the ``dev`` and ``heldout`` splits of
``teachfit/data/evolution_gate_labels.jsonl`` (:func:`measure_gate`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from teachfit.generation.engines import backend_settings
from teachfit.io import DataError, package_data, read_records, write_csv
from teachfit.schema import defaults
from teachfit.studies.evolver.evolve import AUTO_EVOL_OPERATION, build_auto_evol_prompt, build_evol_prompt
from teachfit.studies.evolver.gate import gate_replies
from teachfit.studies.evolver.gate_checks import OPTIONAL_CHECKS, PARSERS, REASONS, GateSettings, response_failure
from teachfit.studies.evolver.gate_judge import GateJudge, judge_factory

LABELS_FILE = "evolution_gate_labels.jsonl"
LABEL_KEYS = ("id", "split", "scenario", "operation", "parent", "reply", "response", "label")
#: ``dev``: written together with the gate's rules (an in-sample check); ``heldout``: written after
#: the rules were frozen and not used to change them
SPLITS = ("dev", "heldout")


def load_gate_labels(path: str | Path | None = None) -> pl.DataFrame:
    """The project's labelled evolution replies (default ``teachfit/data/evolution_gate_labels.jsonl``):
    ``id``, ``split`` (:data:`SPLITS`), ``scenario``, ``operation``, ``parent``, ``reply``, ``response`` (the teacher's answer
    or null), ``label`` (``valid`` or the expected reason of :data:`REASONS`), ``note``.
    Raises DataError naming the line of a bad record."""
    path = Path(path) if path is not None else package_data(LABELS_FILE)
    recs = read_records(path)
    for i, r in enumerate(recs, start=1):
        missing = [k for k in LABEL_KEYS if k not in r]
        if missing:
            raise DataError(f"{path}: record {i} lacks {missing}")
        if r["label"] not in ("valid", *REASONS):
            raise DataError(f"{path}: record {i} has label {r['label']!r}; allowed: valid, {', '.join(REASONS)}")
        if r["scenario"] not in PARSERS:
            raise DataError(f"{path}: record {i} has scenario {r['scenario']!r}")
        if r["split"] not in SPLITS:
            raise DataError(f"{path}: record {i} has split {r['split']!r}; allowed: {', '.join(SPLITS)}")
    df = pl.DataFrame([{**{k: r[k] for k in LABEL_KEYS}, "note": r.get("note", "")} for r in recs],
                      schema={"id": pl.String, "split": pl.String, "scenario": pl.String, "operation": pl.String,
                              "parent": pl.String, "reply": pl.String, "response": pl.String, "label": pl.String,
                              "note": pl.String})
    if df["id"].n_unique() != df.height:
        raise DataError(f"{path}: ids are not unique")
    return df


def evolving_prompt(parent: str, scenario: str, operation: str) -> str:
    """The prompt that produced a reply (:func:`build_evol_prompt` / :func:`build_auto_evol_prompt`)."""
    if scenario == "auto_evol" or operation == AUTO_EVOL_OPERATION:
        return build_auto_evol_prompt(parent)
    return build_evol_prompt(parent, operation)


def predict_labels(labels: pl.DataFrame, settings: GateSettings,
                   judge: GateJudge | Callable[[], GateJudge] | None = None) -> pl.DataFrame:
    """The gate's reason for every labelled reply (null = valid): the instruction gate per
    scenario, then the response checks on replies that pass and carry a response. Adds
    ``predicted``, ``p_request`` and ``p_gain`` to ``labels``."""
    frames = []
    for scenario in sorted(set(labels["scenario"].to_list())):
        sub = labels.filter(pl.col("scenario") == scenario)
        replies = sub.select(
            pl.col("id").alias("parent_id"), pl.col("id").alias("root_id"), pl.lit(1).alias("round"),
            pl.col("operation"), pl.lit("labelled").alias("evolver"), pl.col("parent"),
            pl.Series("prompt", [evolving_prompt(p, scenario, o) for p, o in zip(sub["parent"], sub["operation"])]),
            pl.col("reply"))
        _, verdicts = gate_replies(replies, scenario, settings, judge)
        reasons = verdicts["reason"].to_list()
        # duplicates are a property of a round, not of one labelled reply
        reasons = [None if r == "duplicate" else r for r in reasons]
        reasons = [response_failure(resp, settings.checks) if r is None and resp is not None else r
                   for r, resp in zip(reasons, sub["response"].to_list())]
        frames.append(sub.with_columns(pl.Series("predicted", reasons, dtype=pl.String),
                                       verdicts["p_request"], verdicts["p_gain"]))
    return pl.concat(frames).sort("id")


def gate_quality(predicted: pl.DataFrame) -> pl.DataFrame:
    """Precision and recall of "invalid" detection, overall and per labelled kind.

    ``predicted``: :func:`predict_labels`' table. Rows: ``kind`` = ``all`` (invalid = any
    reason) and one per reason present in the labels; columns ``n`` (labelled rows of the
    kind), ``detected`` (of those, dropped for any reason), ``exact`` (dropped for that very
    reason), ``recall`` (detected / n), ``recall_exact`` (exact / n), ``precision`` (for
    ``all``: truly invalid / dropped; per kind: labelled that kind / predicted that kind;
    NaN when nothing was predicted) and ``false_drops`` (valid rows dropped; ``all`` only).
    """
    lab = predicted["label"].to_list()
    pred = predicted["predicted"].to_list()
    invalid = [x != "valid" for x in lab]
    dropped = [p is not None for p in pred]
    tp = sum(i and d for i, d in zip(invalid, dropped))
    rows = [{"kind": "all", "n": sum(invalid), "detected": tp, "exact": sum(l_ == p for l_, p in zip(lab, pred)
                                                                            if l_ != "valid"),
             "recall": tp / sum(invalid) if any(invalid) else float("nan"),
             "precision": tp / sum(dropped) if any(dropped) else float("nan"),
             "false_drops": sum(d and not i for i, d in zip(invalid, dropped))}]
    rows[0]["recall_exact"] = rows[0]["exact"] / rows[0]["n"] if rows[0]["n"] else float("nan")
    for kind in [r for r in REASONS if r in lab]:
        n = sum(x == kind for x in lab)
        det = sum(x == kind and p is not None for x, p in zip(lab, pred))
        exact = sum(x == kind and p == kind for x, p in zip(lab, pred))
        npred = sum(p == kind for p in pred)
        rows.append({"kind": kind, "n": n, "detected": det, "exact": exact, "recall": det / n,
                     "recall_exact": exact / n, "precision": exact / npred if npred else float("nan"),
                     "false_drops": 0})
    return pl.DataFrame(rows).select("kind", "n", "detected", "exact", "recall", "recall_exact", "precision",
                                     "false_drops")


def measure_gate(judge_dir: str | Path | None, out: str | Path, labels: str | Path | None = None,
                 backend: Mapping[str, Any] | None = None, threshold: float = 0.5) -> dict[str, pl.DataFrame]:
    """Precision and recall of the gate on the labelled set, without and (``judge_dir``) with the judge.

    Writes ``<out>.predictions.csv`` (every labelled reply: its label, the reason predicted
    without and with the judge, the judge's calibrated probabilities) and ``<out>.csv``
    (:func:`gate_quality` per ``mode`` = deterministic | judge and ``split`` = all | dev |
    heldout). ``backend``: the judge's engine settings (default: transformers, from the schema).
    Returns the quality rows by mode.
    """
    table = load_gate_labels(labels)
    out = Path(out)
    results = {"deterministic": predict_labels(table, GateSettings.deterministic())}
    if judge_dir is not None:
        if backend is None:
            backend = backend_settings(defaults("models.*", source="random"), defaults("generation"))
        settings = GateSettings(checks=list(OPTIONAL_CHECKS), judge=True, threshold=threshold, version=1)
        results["judge"] = predict_labels(table, settings, judge_factory(judge_dir, backend, None))
    frames = []
    for mode, pred in results.items():
        for split in ("all", *SPLITS):
            sub = pred if split == "all" else pred.filter(pl.col("split") == split)
            frames.append(gate_quality(sub).with_columns(pl.lit(mode).alias("mode"), pl.lit(split).alias("split")))
    quality = pl.concat(frames, how="diagonal_relaxed")
    quality = quality.select("mode", "split", *[c for c in quality.columns if c not in ("mode", "split")])
    write_csv(quality, out.with_suffix(".csv"))
    joined = results["deterministic"].select("id", "split", "label", pl.col("predicted").alias("deterministic"))
    if "judge" in results:
        joined = joined.join(results["judge"].select("id", pl.col("predicted").alias("judge"), "p_request", "p_gain"),
                             on="id")
    write_csv(joined.join(table.select("id", "note"), on="id"), out.with_name(out.name + ".predictions.csv"))
    return {mode: quality.filter(pl.col("mode") == mode) for mode in results}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m teachfit.studies.evolver.gate_quality --judge DIR --out STEM``: :func:`measure_gate`
    (``make gate-quality`` runs it with SmolLM2, the default config's evolver judge)."""
    import argparse

    ap = argparse.ArgumentParser(description="Precision and recall of the evolver validity gate on the "
                                             "project's labelled evolution replies.")
    ap.add_argument("--judge", default=None, help="judge model folder (omit: deterministic checks only)")
    ap.add_argument("--out", required=True, help="output stem: <stem>.csv and <stem>.predictions.csv")
    ap.add_argument("--labels", default=None, help="labelled JSONL (default: the package's own set)")
    ap.add_argument("--threshold", type=float, default=0.5, help="calibrated P(yes) below which the judge drops")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    tables = measure_gate(args.judge, args.out, labels=args.labels, threshold=args.threshold)
    with pl.Config(tbl_rows=50, tbl_cols=20):
        for mode, table in tables.items():
            print(f"--- {mode}\n{table}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
