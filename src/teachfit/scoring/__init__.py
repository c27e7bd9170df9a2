"""Scoring: per-token losses under named conventions, LLM judges and reward models, and the data metrics (IFD, IC-IFD, PPL, CAR)."""
