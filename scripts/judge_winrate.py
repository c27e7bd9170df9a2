"""Snakemake adapter: pairwise judge (both orders) of student answers vs reference outputs."""

from teachfit.evaluation.winrate import judge_winrate
from teachfit.logs import log_to

log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
judge_winrate(
    answers_path=snakemake.input["answers"],  # noqa: F821
    reference_path=snakemake.input["reference"],  # noqa: F821
    judge_dir=snakemake.input["judge_dir"],  # noqa: F821
    summary_path=snakemake.output["summary"],  # noqa: F821
    judged_path=snakemake.output["judged"],  # noqa: F821
    seed=snakemake.params["seed"],  # noqa: F821
    batch_size=snakemake.params["batch_size"],  # noqa: F821
)
