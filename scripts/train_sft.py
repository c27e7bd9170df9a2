"""Rule train_sft: SFT of one base model on one training set (trl + peft)."""

from teachfit.training.sft import train_sft
from teachfit.workflow.adapter import run

run(train_sft, snakemake)  # noqa: F821
