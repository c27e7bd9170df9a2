"""Evaluation: lm-eval on models and SFT checkpoints; pairwise win rates."""
