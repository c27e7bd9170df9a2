"""Rule evaluate_model: lm-eval on a base or instruct model."""

from teachfit.evaluation.lm_eval import evaluate_model
from teachfit.workflow.adapter import run

run(evaluate_model, snakemake)  # noqa: F821
