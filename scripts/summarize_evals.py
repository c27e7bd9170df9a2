"""Rule summarize_evals: all tidy lm-eval tables -> one CSV."""

from teachfit.evaluation.lm_eval import summarize_evals
from teachfit.workflow.adapter import run

run(summarize_evals, snakemake)  # noqa: F821
