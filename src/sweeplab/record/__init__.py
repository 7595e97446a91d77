"""A run's MLflow record over its whole life (run.RunRecord): open or reopen, describe, write, publish, close; its model, checkpoints, identity and liveness."""
