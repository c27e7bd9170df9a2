"""Rule make_ifs_prompts: the IFS prompt set (full and partial instructions)."""

from teachfit.studies.ifs.prompts import make_ifs_prompts
from teachfit.workflow.adapter import run

run(make_ifs_prompts, snakemake)  # noqa: F821
