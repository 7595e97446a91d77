"""Reinforcement learning: Gymnasium environments, exact MDP solvers, tabular
TD agents and DQN, run through the same entry point, MLflow layout and
``sweeplab compare`` as the supervised families (:mod:`sweeplab.rl.family`)."""
