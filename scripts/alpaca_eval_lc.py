"""Rule alpaca_eval_lc: AlpacaEval 2's length-controlled win rate (alpaca-eval package; needs the hub)."""

from teachfit.evaluation.alpaca_eval2 import alpaca_eval_lc
from teachfit.workflow.adapter import run

run(alpaca_eval_lc, snakemake)  # noqa: F821
