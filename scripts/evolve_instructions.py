"""Rule evolve_instructions: one round of Evol-Instruct or Auto Evol-Instruct with one evolver."""

from teachfit.studies.evolver.evolve import evolve_instructions
from teachfit.workflow.adapter import run

run(evolve_instructions, snakemake)  # noqa: F821
