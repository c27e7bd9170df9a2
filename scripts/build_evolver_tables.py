"""Snakemake adapter: evolver comparison, instruction statistics, selection comparison."""

from teachfit.logs import log_to
from teachfit.studies.evolver.tables import build_evolver_tables

log_to(snakemake.log["log"])  # noqa: F821
build_evolver_tables(
    inputs={k: list(snakemake.input[k]) for k in ("stats", "drops", "comparison", "selection", "rounds")},  # noqa: F821
    outputs=dict(snakemake.output.items()),  # noqa: F821
    performance=snakemake.params["performance"],  # noqa: F821
    selection=snakemake.params["selection"],  # noqa: F821
)
