"""Rule answer_winrate: the fine-tuned student's answers to the win-rate instructions."""

from teachfit.evaluation.winrate import answer_winrate
from teachfit.workflow.adapter import run

run(answer_winrate, snakemake)  # noqa: F821
