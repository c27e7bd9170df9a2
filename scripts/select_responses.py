"""Rule select_responses: Keep one response per instruction (first / best / worst by reward)."""

from teachfit.generation.responses import select_responses
from teachfit.workflow.adapter import run

run(select_responses, snakemake)  # noqa: F821
