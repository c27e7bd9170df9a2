"""Rule gate_responses: WizardLM's response rules on the teacher's answers to one evolver's pool."""

from teachfit.studies.evolver.gate import gate_responses
from teachfit.workflow.adapter import run

run(gate_responses, snakemake)  # noqa: F821
