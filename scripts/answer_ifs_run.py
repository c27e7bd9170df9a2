"""Rule answer_ifs_run: answers of every checkpoint of an SFT run to the IFS prompts and ObjecQA."""

from teachfit.studies.ifs.answers import answer_ifs_run
from teachfit.workflow.adapter import run

run(answer_ifs_run, snakemake)  # noqa: F821
