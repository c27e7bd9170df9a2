"""Snakemake adapter: reward of every generated response."""

from teachfit.logs import log_to
from teachfit.scoring.rewards import score_rewards

log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
score_rewards(
    generations_path=snakemake.input["generations"],  # noqa: F821
    model_dir=snakemake.input["model_dir"],  # noqa: F821
    out_path=snakemake.output["rewards"],  # noqa: F821
    reward=snakemake.params["reward"],  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
