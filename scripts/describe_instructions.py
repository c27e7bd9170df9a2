"""Rule describe_instructions: length, judged difficulty, diversity and reward of each instruction."""

from teachfit.studies.evolver.describe import describe_instructions
from teachfit.workflow.adapter import run

run(describe_instructions, snakemake)  # noqa: F821
