"""What trains a config: a torch network under Lightning (torch/), a scikit-learn estimator (classical), an agent in an environment (rl)."""
