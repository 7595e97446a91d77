"""What a multirun does: the sweep callback, the Optuna search and its pruning, SLURM; reading runs back is reports/."""
