"""Rule score_ifs: tone labels (IFS) and ObjecQA judgements of answers."""

from teachfit.studies.ifs.answers import score_ifs
from teachfit.workflow.adapter import run

run(score_ifs, snakemake)  # noqa: F821
