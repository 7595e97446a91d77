"""sweeplab's Optuna sweeper for Hydra: ``hydra/sweeper=optuna`` (see sweeplab.optuna_search)."""
