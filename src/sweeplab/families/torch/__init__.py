"""The torch family: the LightningModule, its callbacks, optimizers and schedules, and the fit-then-test of a network."""
