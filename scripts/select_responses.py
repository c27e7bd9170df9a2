"""Snakemake adapter: keep one response per instruction (first / best / worst)."""

from teachfit.generation.responses import select_responses
from teachfit.logs import log_to

log_to(snakemake.log["log"])  # noqa: F821
select_responses(
    generations_path=snakemake.input["generations"],  # noqa: F821
    rewards_path=snakemake.input["rewards"],  # noqa: F821
    out_path=snakemake.output["responses"],  # noqa: F821
    select=snakemake.params["select"],  # noqa: F821
)
