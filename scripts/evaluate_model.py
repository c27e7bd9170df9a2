"""Snakemake adapter: lm-eval on a base or instruct model."""

from teachfit.evaluation.lm_eval import evaluate_model_stage
from teachfit.logs import log_to

log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
evaluate_model_stage(
    model_dir=snakemake.input["model_dir"],  # noqa: F821
    out_json=snakemake.output["results"],  # noqa: F821
    out_samples=snakemake.output["samples"],  # noqa: F821
    out_tidy=snakemake.output["tidy"],  # noqa: F821
    settings=snakemake.params["eval"],  # noqa: F821
    model=snakemake.wildcards["model"],  # noqa: F821
)
