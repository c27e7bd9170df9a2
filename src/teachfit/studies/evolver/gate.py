"""The validity gate on evolved instructions: one gate, one counted drop reason per failure kind.

Every evolution reply passes this gate before the teacher answers it (rule
``gate_instructions``), and every answered instruction passes its response checks before the
equal-size sets are built (rule ``gate_responses``). A reply gets at most one reason: the
first failing check in :data:`~teachfit.studies.evolver.gate_checks.INSTRUCTION_REASONS` order,
then :data:`~teachfit.studies.evolver.gate_checks.RESPONSE_REASONS`.

The checks and their sources (WizardLM's elimination rules, Xu et al. 2023, arXiv 2304.12244,
§3) are in :mod:`teachfit.studies.evolver.gate_checks`, the judge asked where they cannot decide
in :mod:`teachfit.studies.evolver.gate_judge`, and the gate's precision and recall on the
project's labelled replies in :mod:`teachfit.studies.evolver.gate_quality`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from teachfit.io import DataError, content_id, read_parquet, write_json, write_parquet
from teachfit.studies.evolver.evolve import CARRIED_COLUMNS, LINEAGE_COLUMNS, REPLY_COLUMNS
from teachfit.studies.evolver.gate_checks import (
    INSTRUCTION_REASONS,
    RESPONSE_REASONS,
    GateSettings,
    check_instruction,
    normalize_text,
    response_failure,
)
from teachfit.studies.evolver.gate_judge import GateJudge, judge_factory

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- a round of replies

def gate_replies(replies: pl.DataFrame, scenario: str, settings: GateSettings,
                 judge: GateJudge | Callable[[], GateJudge] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The instruction gate over one round's replies (:data:`REPLY_COLUMNS` plus carried columns).

    ``judge``: a :class:`GateJudge`, or a zero-argument factory called only when some reply
    has an open question (the judge model is loaded only then); ignored unless
    ``settings.judge``. Returns ``(kept, verdicts)``: ``kept`` has :data:`LINEAGE_COLUMNS`
    plus the carried columns (``id = content_id(parent_id, operation, round, instruction)``);
    ``verdicts`` has one row per reply: ``parent_id``, ``operation``, ``reply``, ``instruction``
    (cleaned; null when nothing was left), ``reason`` (null = kept), ``pending`` (the judge's
    open questions, comma-joined), ``p_request`` and ``p_gain`` (calibrated, NaN when not asked).
    """
    from tqdm.auto import tqdm

    missing = [c for c in REPLY_COLUMNS if c not in replies.columns]
    if missing:
        raise DataError(f"gate: reply table lacks column(s) {missing}; has {replies.columns}")
    rows = list(replies.iter_rows(named=True))
    verdicts = [check_instruction(r["parent"], r["reply"], scenario=scenario, prompt=r["prompt"], settings=settings)
                for r in tqdm(rows, desc="gate", leave=False)]
    n = len(rows)
    p_request = np.full(n, np.nan)
    p_gain = np.full(n, np.nan)
    reasons = [v.reason for v in verdicts]
    ask_req = [i for i, v in enumerate(verdicts) if v.reason is None and "not_instruction" in v.pending]
    ask_gain = [i for i, v in enumerate(verdicts) if v.reason is None and "no_gain" in v.pending]
    if settings.judge and (ask_req or ask_gain):
        j = judge() if callable(judge) and not isinstance(judge, GateJudge) else judge
        if j is None:
            raise ValueError("gate: settings.judge is on but no judge was given")
        p_request[ask_req] = j.is_request([verdicts[i].instruction for i in ask_req])
        p_gain[ask_gain] = j.has_gain([rows[i]["parent"] for i in ask_gain], [verdicts[i].instruction for i in ask_gain])
        for i in ask_gain:
            if p_gain[i] < settings.threshold:
                reasons[i] = "no_gain"
        for i in ask_req:
            if p_request[i] < settings.threshold:
                reasons[i] = "not_instruction"
        log.info("gate judge: %d request and %d gain questions; content-free P(yes) %s", len(ask_req),
                 len(ask_gain), j.content_free)
    elif not settings.judge:
        for i, v in enumerate(verdicts):
            if reasons[i] is None and v.strict:
                reasons[i] = v.strict[0]
    carried = [c for c in CARRIED_COLUMNS if c in replies.columns]
    kept_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for i, (r, v) in enumerate(zip(rows, verdicts)):
        if reasons[i] is None:
            key = normalize_text(v.instruction or "")
            if key in seen:
                reasons[i] = "duplicate"
                continue
            seen.add(key)
            kept_rows.append({
                "id": content_id(r["parent_id"], r["operation"], r["round"], v.instruction),
                "parent_id": r["parent_id"], "root_id": r["root_id"] or r["parent_id"], "round": r["round"],
                "operation": r["operation"], "evolver": r["evolver"], "instruction": v.instruction,
                **{c: r[c] for c in carried}})
    schema: dict[str, Any] = {c: pl.String for c in LINEAGE_COLUMNS}
    schema["round"] = pl.Int64
    schema.update({c: replies.schema[c] for c in carried})
    kept = pl.DataFrame(kept_rows, schema=schema).with_columns(pl.lit(scenario).alias("scenario"))
    table = pl.DataFrame({
        "parent_id": [r["parent_id"] for r in rows], "operation": [r["operation"] for r in rows],
        "reply": [r["reply"] for r in rows], "instruction": [v.instruction for v in verdicts],
        "reason": reasons, "pending": [",".join(v.pending) for v in verdicts],
        "p_request": p_request, "p_gain": p_gain,
    }, schema={"parent_id": pl.String, "operation": pl.String, "reply": pl.String, "instruction": pl.String,
               "reason": pl.String, "pending": pl.String, "p_request": pl.Float64, "p_gain": pl.Float64})
    return kept, table


def _counts(reasons: Sequence[str | None], allowed: Sequence[str]) -> dict[str, int]:
    c = Counter(r for r in reasons if r is not None)
    return {r: int(c.get(r, 0)) for r in allowed}


# --------------------------------------------------------------------------- rule gate_instructions


def gate_instructions(replies: str | Path, judge_dir: str | Path, evolved: str | Path, verdicts: str | Path,
                      drops: str | Path, scenario: str, evolver: str, round: int, gate: Mapping[str, Any],
                      backend: Mapping[str, Any], threads: int = 1) -> pl.DataFrame:
    """Rule ``gate_instructions``: the validity gate on one round of one evolver's replies.

    Inputs: ``replies`` (``evolve_instructions``' table, :data:`REPLY_COLUMNS` plus carried
    columns) and ``judge_dir`` (``evolver.judge``, loaded only when a reply has an open
    question and ``gate.judge`` is on). Params: ``scenario``, ``evolver``, ``round`` (metadata),
    ``gate`` (``evolver.gate``, :class:`GateSettings`), ``backend`` (the judge's engine
    settings; label scoring reads logits, :func:`teachfit.scoring.label_judge.label_scorer`).

    Writes ``evolved`` (the valid instructions with lineage and ``scenario``; the next round
    evolves these), ``verdicts`` (one row per reply, see :func:`gate_replies`) and ``drops``
    (JSON: evolver, scenario, round, input_rows, kept, dropped by reason of
    :data:`INSTRUCTION_REASONS`, kept operations). Returns the kept rows. Raises DataError on
    a malformed reply table.
    """
    settings = GateSettings.from_dict(gate)
    table = read_parquet(replies, required=list(REPLY_COLUMNS))
    kept, verdict_table = gate_replies(table, scenario, settings, judge_factory(judge_dir, backend, threads))
    counts = _counts(verdict_table["reason"].to_list(), INSTRUCTION_REASONS)
    log.info("%s round %d (%s): %d of %d replies are valid instructions; dropped %s", scenario, round, evolver,
             kept.height, table.height, {k: v for k, v in counts.items() if v})
    write_parquet(verdict_table, verdicts)
    write_json({"evolver": evolver, "scenario": scenario, "round": round, "input_rows": table.height,
                "kept": kept.height, "dropped": counts,
                "operations": dict(Counter(kept["operation"].to_list())) if kept.height else {}}, drops)
    write_parquet(kept, evolved)
    return kept


# --------------------------------------------------------------------------- rule gate_responses


def gate_responses(instructions: str | Path, responses: str | Path, answered: str | Path, drops: str | Path,
                   evolver: str, scenario: str, gate: Mapping[str, Any]) -> pl.DataFrame:
    """Rule ``gate_responses``: WizardLM's response rules on the teacher's answers to one evolver's
    pool of valid instructions, before the equal-size sets are built.

    Inputs: ``instructions`` (the pool, ``pool_evolved``: ``id``, ``instruction``, ``round``)
    and ``responses`` (the teacher's kept response per instruction, ``select_responses``:
    ``id``, ``response`` and the instruction's columns). Params: ``evolver``, ``scenario``
    (metadata), ``gate`` (``evolver.gate``: which response checks run).

    Writes ``answered`` (the response rows that pass, one per valid instruction) and ``drops``
    (JSON: evolver, scenario, and per round ``input_rows``, ``valid`` and ``dropped`` by
    :data:`RESPONSE_REASONS`). Raises DataError when an instruction of the pool has no
    response or a response has no instruction (nothing is dropped silently).
    """
    settings = GateSettings.from_dict(gate)
    pool = read_parquet(instructions, required=["id", "instruction", "round"])
    resp = read_parquet(responses, required=["id", "response"])
    if resp["id"].n_unique() != resp.height:
        raise DataError(f"{responses}: more than one response per instruction id")
    missing = set(pool["id"]) - set(resp["id"])
    extra = set(resp["id"]) - set(pool["id"])
    if missing or extra:
        raise DataError(f"{responses}: {len(missing)} instruction(s) of {instructions} without a response and "
                        f"{len(extra)} response(s) without an instruction (e.g. {sorted(missing or extra)[:3]})")
    resp = resp.drop([c for c in ("round",) if c in resp.columns]).join(pool.select("id", "round"), on="id", how="left")
    reasons = [response_failure(r, settings.checks) for r in resp["response"].to_list()]
    resp = resp.with_columns(pl.Series("_reason", reasons, dtype=pl.String))
    per_round = []
    for rnd in sorted(set(pool["round"].to_list())):
        sub = resp.filter(pl.col("round") == rnd)
        c = _counts(sub["_reason"].to_list(), RESPONSE_REASONS)
        per_round.append({"round": int(rnd), "input_rows": sub.height, "valid": sub.height - sum(c.values()),
                          "dropped": c})
    kept = resp.filter(pl.col("_reason").is_null()).drop("_reason")
    log.info("%s / %s: %d of %d answered instructions pass the response checks", evolver, scenario, kept.height,
             resp.height)
    write_json({"evolver": evolver, "scenario": scenario, "rounds": per_round}, drops)
    write_parquet(kept, answered)
    return kept
