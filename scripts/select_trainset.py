"""Rule select_trainset: full data or the top-k% by a selection metric."""

from teachfit.training.selection import select_trainset
from teachfit.workflow.adapter import run

run(select_trainset, snakemake)  # noqa: F821
