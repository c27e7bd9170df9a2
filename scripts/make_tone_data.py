"""Rule make_tone_data: answer-like responses vs continuations for the tone classifier."""

from teachfit.studies.ifs.tone import make_tone_data
from teachfit.workflow.adapter import run

run(make_tone_data, snakemake)  # noqa: F821
