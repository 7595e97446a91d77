"""Reinforcement learning's own pieces: Gymnasium and grid environments, exact MDP solvers,
tabular TD agents, DQN and the served policy; ``sweeplab.families.rl`` runs them through
the same entry point, MLflow layout and ``sweeplab compare`` as the supervised families."""
