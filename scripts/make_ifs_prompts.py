"""Snakemake adapter: IFS prompt set (full and partial instructions)."""

from teachfit.logs import log_to
from teachfit.studies.ifs.prompts import make_prompts

log_to(snakemake.log["log"])  # noqa: F821
make_prompts(
    source=snakemake.input["source"] or None,  # noqa: F821
    out_path=snakemake.output["prompts"],  # noqa: F821
    settings=snakemake.params["prompts"],  # noqa: F821
)
