"""Input and params functions of rule ``mix_responses`` (generator kind ``per_instruction``), as
plain functions of the validated config; ``rules/per_instruction.smk`` delegates to them."""

from __future__ import annotations

from typing import Any

from teachfit.generation.per_instruction import SCORED_CRITERIA


def entry(config: dict[str, Any], generator: str) -> dict[str, Any]:
    """The validated ``generators.<generator>.per_instruction`` section."""
    return config["generators"][generator]["per_instruction"]


def candidate_names(config: dict[str, Any], generator: str) -> list[str]:
    """The candidate generators, in tie-break order."""
    return list(entry(config, generator)["generators"])


def candidate_responses(config: dict[str, Any], dataset: str, generator: str) -> list[str]:
    """Each candidate's kept responses to ``dataset`` (aligned with :func:`candidate_names`)."""
    return [f"results/responses/{dataset}/{g}.parquet" for g in candidate_names(config, generator)]


def candidate_scores(config: dict[str, Any], dataset: str, generator: str) -> list[str]:
    """Each candidate's responses scored by the student under the entry's convention (aligned with
    :func:`candidate_names`); none for a criterion that needs no scores (``reward``)."""
    e = entry(config, generator)
    if e["criterion"] not in SCORED_CRITERIA:
        return []
    return [f"results/scores/{dataset}/{g}/{e['student']}.{e['convention']}.parquet"
            for g in candidate_names(config, generator)]
