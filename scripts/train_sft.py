"""Snakemake adapter: SFT of one base model on one training set."""

from teachfit.logs import log_to
from teachfit.training.sft import train_sft

log = log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
summary = train_sft(
    model_dir=snakemake.input["model_dir"],  # noqa: F821
    train_path=snakemake.input["trainset"],  # noqa: F821
    out_dir=snakemake.output["sft_dir"],  # noqa: F821
    settings=snakemake.params["sft"],  # noqa: F821
    scratch_dir=snakemake.params["scratch"],  # noqa: F821
    log_table_path=snakemake.output["train_log"],  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
log.info("SFT finished: %s", summary)
