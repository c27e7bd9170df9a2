"""Rule evaluate_checkpoints: lm-eval on the checkpoints of one SFT run."""

from teachfit.evaluation.lm_eval import evaluate_checkpoints
from teachfit.workflow.adapter import run

run(evaluate_checkpoints, snakemake)  # noqa: F821
