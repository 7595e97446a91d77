"""Named experiment presets (this folder is the package sweeplab.experiments)."""
