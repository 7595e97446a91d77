"""A metric's definition, for torch and scikit-learn runs alike (scores), and its one-confusion-matrix torchmetrics form (confusion)."""
