"""Rule merge_evolved: the kept evolutions per evolver of one scenario, equalized in size."""

from teachfit.studies.evolver.sets import merge_evolved
from teachfit.workflow import run

run(merge_evolved, snakemake)  # noqa: F821
