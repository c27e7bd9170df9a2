"""Evolver study (Hui et al. 2024, "Smaller Language Models Are Better Instruction Evolvers")."""
