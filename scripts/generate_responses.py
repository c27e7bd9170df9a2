"""Rule generate_responses: One generator answers every instruction of a data set (n samples each)."""

from teachfit.generation.responses import generate_responses
from teachfit.workflow.adapter import run

run(generate_responses, snakemake)  # noqa: F821
