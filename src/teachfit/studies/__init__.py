"""The three studies: teacher (Xu et al. 2024), evolver (Hui et al. 2024), IFS (AlShikh et al. 2023)."""
