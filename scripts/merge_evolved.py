"""Rule merge_evolved: rank the evolvers of one scenario (evolver.min_valid) and equalize the ranked sets."""

from teachfit.studies.evolver.sets import merge_evolved
from teachfit.workflow.adapter import run

run(merge_evolved, snakemake)  # noqa: F821
