"""Rule judge_winrate: judge student answers against a benchmark's reference outputs (pairwise_ab, alpaca_eval2 or arena_hard)."""

from teachfit.evaluation.winrate import judge_winrate
from teachfit.workflow.adapter import run

run(judge_winrate, snakemake)  # noqa: F821
