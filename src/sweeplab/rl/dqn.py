"""DQN (Mnih et al. 2015): a Q-network trained by Lightning from a replay
buffer, with a target network, on an environment with vector observations.

One training step = ``train_every`` environment steps with an epsilon-greedy
policy (epsilon falls linearly from ``epsilon`` to ``epsilon_min`` over
``epsilon_decay_steps`` environment steps), then one gradient step on a batch
drawn from the buffer; every ``target_update`` gradient steps the target
network copies the online one. The network is any ``conf/model`` option built
for (observation size -> number of actions); the optimizer is ``conf/optimizer``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sweeplab.rl.tabular import _check, _check_count

if TYPE_CHECKING:  # Lightning is imported when the module is built, not when a config is checked
    from collections.abc import Callable

    import torch
    from torch import nn

    from sweeplab.rl.dqn_module import DQNModule


class DQN:
    """The agent's settings (conf/agent/dqn.yaml); :meth:`module` builds what Lightning trains."""

    needs = "vector observations and discrete actions (env=cartpole)"
    uses_network = True

    def __init__(
        self,
        gamma: float = 0.99,
        epsilon: float = 1.0,
        epsilon_min: float = 0.05,
        epsilon_decay_steps: int = 10_000,
        total_steps: int = 30_000,
        steps_per_epoch: int = 1_000,
        replay_size: int = 50_000,
        warmup_steps: int = 1_000,
        batch_size: int = 64,
        target_update: int = 500,
        train_every: int = 1,
        cpu_threads: int | None = 1,
    ) -> None:
        _check("gamma", gamma, 0.0, 1.0)
        _check("epsilon", epsilon, 0.0, 1.0)
        _check("epsilon_min", epsilon_min, 0.0, 1.0)
        for name, value in (
            ("epsilon_decay_steps", epsilon_decay_steps),
            ("total_steps", total_steps),
            ("steps_per_epoch", steps_per_epoch),
            ("replay_size", replay_size),
            ("warmup_steps", warmup_steps),
            ("batch_size", batch_size),
            ("target_update", target_update),
            ("train_every", train_every),
        ):
            _check_count(name, value)
        if cpu_threads is not None:
            _check_count("cpu_threads", cpu_threads)
        if warmup_steps < batch_size:
            raise ValueError(
                f"agent.warmup_steps={warmup_steps}: must be at least agent.batch_size={batch_size} (the first batch is drawn after the warm-up)"
            )
        self.settings = dict(
            gamma=gamma,
            epsilon=epsilon,
            epsilon_min=epsilon_min,
            epsilon_decay_steps=epsilon_decay_steps,
            replay_size=replay_size,
            warmup_steps=warmup_steps,
            batch_size=batch_size,
            target_update=target_update,
            train_every=train_every,
            steps_per_epoch=steps_per_epoch,
            cpu_threads=cpu_threads,
        )
        self.total_steps, self.steps_per_epoch = total_steps, steps_per_epoch

    @classmethod
    def fits(cls, env: Any) -> bool:
        from gymnasium.spaces import Box, Discrete

        return isinstance(env.observation_space, Box) and len(env.observation_space.shape) == 1 and isinstance(env.action_space, Discrete)

    @staticmethod
    def epochs_of(total_steps: int, steps_per_epoch: int, train_every: int) -> int:
        """Training steps in epochs of ``steps_per_epoch`` (the last one whole)."""
        return -(-total_steps // (steps_per_epoch * train_every))

    @property
    def epochs(self) -> int:
        return self.epochs_of(self.total_steps, self.steps_per_epoch, self.settings["train_every"])

    def module(self, net: nn.Module, optimizer: Callable[..., torch.optim.Optimizer], env: Any, seed: int) -> DQNModule:
        from sweeplab.rl.dqn_module import DQNModule

        return DQNModule(net, optimizer, env, seed, **self.settings)
