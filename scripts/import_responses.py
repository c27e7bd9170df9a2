"""Rule import_responses: a dataset generator's responses joined to the study's instructions."""

from teachfit.generation.dataset import import_responses
from teachfit.workflow.adapter import run

run(import_responses, snakemake)  # noqa: F821
