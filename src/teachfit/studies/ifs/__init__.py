"""IFS study (AlShikh et al. 2023, "Becoming self-instruct")."""
