"""Rule plot_evolver_figures: the evolver study's figures."""

from teachfit.studies.evolver.tables import plot_evolver_figures
from teachfit.workflow.adapter import run

run(plot_evolver_figures, snakemake)  # noqa: F821
