"""Rule download_winrate_data: one win-rate benchmark file from the hub -> Parquet (needs network)."""

from teachfit.evaluation.winrate_sets import download_winrate_data
from teachfit.workflow.adapter import run

run(download_winrate_data, snakemake)  # noqa: F821
