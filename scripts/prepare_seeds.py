"""Snakemake adapter: seed file -> instructions Parquet."""

from teachfit.logs import log_to
from teachfit.seeds import prepare_seeds

log_to(snakemake.log["log"])  # noqa: F821
prepare_seeds(
    source=snakemake.input["source"],  # noqa: F821
    name=snakemake.wildcards["seedset"],  # noqa: F821
    entry=snakemake.params["entry"],  # noqa: F821
    out_path=snakemake.output["instructions"],  # noqa: F821
)
