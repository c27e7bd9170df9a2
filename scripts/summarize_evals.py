"""Snakemake adapter: all tidy lm-eval tables -> one CSV."""

from teachfit.evaluation.lm_eval import summarize_evals
from teachfit.logs import log_to

log_to(snakemake.log["log"])  # noqa: F821
summarize_evals(
    paths=list(snakemake.input["runs"]) + list(snakemake.input["models"]),  # noqa: F821
    out_csv=snakemake.output["table"],  # noqa: F821
)
