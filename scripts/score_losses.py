"""Rule score_losses: L(Q), L(A|Q), L(A) of every kept response under one scorer."""

from teachfit.scoring.losses import score_losses
from teachfit.workflow.adapter import run

run(score_losses, snakemake)  # noqa: F821
