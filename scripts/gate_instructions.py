"""Rule gate_instructions: the validity gate on one round of one evolver's replies."""

from teachfit.studies.evolver.gate import gate_instructions
from teachfit.workflow.adapter import run

run(gate_instructions, snakemake)  # noqa: F821
