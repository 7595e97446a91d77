"""sweeplab's Optuna sweeper for Hydra: ``hydra/sweeper=optuna`` (see sweeplab.sweeps.optuna)."""
