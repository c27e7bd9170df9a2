"""Rule score_rewards: The reward of every generated response."""

from teachfit.scoring.rewards import score_rewards
from teachfit.workflow.adapter import run

run(score_rewards, snakemake)  # noqa: F821
