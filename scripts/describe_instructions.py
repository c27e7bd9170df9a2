"""Snakemake adapter: length, difficulty, diversity and reward of each instruction."""

from teachfit.logs import log_to
from teachfit.studies.evolver.describe import describe_instructions

log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
describe_instructions(
    instructions_path=snakemake.input["instructions"],  # noqa: F821
    responses_path=snakemake.input["responses"],  # noqa: F821
    judge_dir=snakemake.input["judge_dir"],  # noqa: F821
    embed_dir=snakemake.input["embed_dir"],  # noqa: F821
    out_path=snakemake.output["stats"],  # noqa: F821
    batch_size=snakemake.params["batch_size"],  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
