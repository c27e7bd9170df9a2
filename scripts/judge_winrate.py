"""Rule judge_winrate: pairwise judge (both orders) of student answers vs reference outputs."""

from teachfit.evaluation.winrate import judge_winrate
from teachfit.workflow import run

run(judge_winrate, snakemake)  # noqa: F821
