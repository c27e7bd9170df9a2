"""Snakemake adapter: the fine-tuned student's answers to the win-rate instructions."""

from teachfit.evaluation.winrate import answer_winrate
from teachfit.logs import log_to

log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
answer_winrate(
    instructions_path=snakemake.input["instructions"],  # noqa: F821
    model_dir=snakemake.input["model_dir"],  # noqa: F821
    sft_dir=snakemake.input["sft_dir"],  # noqa: F821
    out_path=snakemake.output["answers"],  # noqa: F821
    max_new_tokens=snakemake.params["max_new_tokens"],  # noqa: F821
    batch_size=snakemake.params["batch_size"],  # noqa: F821
)
