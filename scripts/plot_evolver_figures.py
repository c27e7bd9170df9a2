"""Snakemake adapter: evolver-study figures."""

from teachfit.logs import log_to
from teachfit.studies.evolver.tables import plot_evolver_figures

log_to(snakemake.log["log"])  # noqa: F821
plot_evolver_figures(
    rounds=list(snakemake.input["rounds"]),  # noqa: F821
    stats_csv=snakemake.input["stats_table"],  # noqa: F821
    selection_csv=snakemake.input["selection_table"],  # noqa: F821
    outputs=dict(snakemake.output.items()),  # noqa: F821
    style=snakemake.params["style"],  # noqa: F821
)
