"""Rule select_checkpoint: IFS curve of one run and its plateau-selected checkpoint."""

from teachfit.studies.ifs.scores import select_checkpoint
from teachfit.workflow.adapter import run

run(select_checkpoint, snakemake)  # noqa: F821
