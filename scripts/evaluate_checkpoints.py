"""Snakemake adapter: lm-eval on the checkpoints of one SFT run."""

from teachfit.evaluation.lm_eval import evaluate_run
from teachfit.logs import log_to

log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
evaluate_run(
    sft_dir=snakemake.input["sft_dir"],  # noqa: F821
    model_dir=snakemake.input["model_dir"],  # noqa: F821
    selected=list(snakemake.input["selected"]),  # noqa: F821
    out_dir=snakemake.output["eval_dir"],  # noqa: F821
    out_tidy=snakemake.output["tidy"],  # noqa: F821
    settings=snakemake.params["eval"],  # noqa: F821
    run=dict(snakemake.wildcards),  # noqa: F821
)
