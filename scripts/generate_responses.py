"""Snakemake adapter: one generator answers every instruction of a data set."""

from teachfit.generation.responses import generate_responses
from teachfit.logs import log_to

log_to(snakemake.log["log"], snakemake.threads)  # noqa: F821
generate_responses(
    instructions_path=snakemake.input["instructions"],  # noqa: F821
    model_dir=snakemake.input["model_dir"],  # noqa: F821
    out_path=snakemake.output["generations"],  # noqa: F821
    shard_dir=snakemake.params["shard_dir"],  # noqa: F821
    generator_name=snakemake.wildcards["generator"],  # noqa: F821
    generator=snakemake.params["generator"],  # noqa: F821
    backend=snakemake.params["backend"],  # noqa: F821
    generation=snakemake.params["generation"],  # noqa: F821
    threads=snakemake.threads,  # noqa: F821
)
