"""Rule pool_evolved: one evolver's valid instructions of one scenario, the set the teacher answers."""

from teachfit.studies.evolver.sets import pool_evolved
from teachfit.workflow.adapter import run

run(pool_evolved, snakemake)  # noqa: F821
