"""Teachfit: which teacher, which evolver, when to stop (a Snakemake pipeline for instruction-tuning data studies)."""

__version__ = "0.2.0"
