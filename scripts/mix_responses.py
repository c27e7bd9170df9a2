"""Rule mix_responses: a per_instruction generator's responses, chosen per instruction."""

from teachfit.generation.per_instruction import mix_responses
from teachfit.workflow.adapter import run

run(mix_responses, snakemake)  # noqa: F821
