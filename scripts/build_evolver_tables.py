"""Rule build_evolver_tables: evolver comparison, instruction statistics, selection comparison, top-1 statistics."""

from teachfit.studies.evolver.tables import build_evolver_tables
from teachfit.workflow.adapter import run

run(build_evolver_tables, snakemake)  # noqa: F821
