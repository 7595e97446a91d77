"""sweeplab's fused launcher for Hydra: ``hydra/launcher=fused`` (see sweeplab.sweeps.fused)."""
