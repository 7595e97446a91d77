"""Hydra configs shipped with sweeplab (this folder is the package sweeplab.conf)."""
