"""Snakemake adapter: hub data set -> raw Parquet (needs network)."""

from teachfit.logs import log_to
from teachfit.seeds import download_seedset

log_to(snakemake.log["log"])  # noqa: F821
download_seedset(entry=snakemake.params["entry"], out_path=snakemake.output["raw"])  # noqa: F821
