"""Rule answer_ifs_model: a model's answers to the IFS prompts (every format) and ObjecQA."""

from teachfit.studies.ifs.answers import answer_ifs_model
from teachfit.workflow.adapter import run

run(answer_ifs_model, snakemake)  # noqa: F821
