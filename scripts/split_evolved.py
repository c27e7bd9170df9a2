"""Rule split_evolved: one evolver's equalized instruction set."""

from teachfit.studies.evolver.sets import split_evolved
from teachfit.workflow import run

run(split_evolved, snakemake)  # noqa: F821
