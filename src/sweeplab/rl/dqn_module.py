"""What Lightning trains for a DQN agent (``sweeplab.rl.dqn.DQN.module``): the replay
buffer, the play state and the LightningModule. Kept apart from the agent's settings so
that checking an ``agent=dqn`` config does not import Lightning."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


class ReplayBuffer:
    """A fixed-size ring of transitions held as numpy arrays."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...]) -> None:
        self.obs = np.zeros((capacity, *obs_shape), dtype=np.float32)
        self.next_obs = np.zeros_like(self.obs)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.float32)
        self.capacity, self.size, self.position = capacity, 0, 0

    def add(self, obs: Any, action: int, reward: float, next_obs: Any, terminated: bool) -> None:
        i = self.position
        self.obs[i], self.actions[i], self.rewards[i], self.next_obs[i], self.terminated[i] = obs, action, reward, next_obs, terminated
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        idx = rng.integers(self.size, size=batch_size)
        return self.obs[idx], self.actions[idx], self.rewards[idx], self.next_obs[idx], self.terminated[idx]


class _Steps(Dataset):
    """An epoch of ``n`` training steps: the data come from the environment, not from here."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class _PlayState:
    """Where the agent is in its environment, and the episodes it finished."""

    def __init__(self, buffer: ReplayBuffer, rng: np.random.Generator) -> None:
        self.buffer, self.rng = buffer, rng
        self.obs: Any = None
        self.env_steps, self.episode_return, self.episode_length, self.epoch_first_episode = 0, 0.0, 0, 0
        self.returns: list[float] = []
        self.lengths: list[int] = []


class DQNModule(pl.LightningModule):
    def __init__(
        self,
        net: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        env: Any,
        seed: int,
        gamma: float,
        epsilon: float,
        epsilon_min: float,
        epsilon_decay_steps: int,
        replay_size: int,
        warmup_steps: int,
        batch_size: int,
        target_update: int,
        train_every: int,
        steps_per_epoch: int,
        cpu_threads: int | None = 1,
    ) -> None:
        super().__init__()
        self.net, self.target = net, copy.deepcopy(net).requires_grad_(False)
        self.optimizer_factory, self.env, self.seed = optimizer, env, seed
        self.gamma, self.batch_size, self.target_update, self.train_every = gamma, batch_size, target_update, train_every
        self.epsilon_start, self.epsilon_min, self.epsilon_decay_steps = epsilon, epsilon_min, epsilon_decay_steps
        self.warmup_steps, self.steps_per_epoch = warmup_steps, steps_per_epoch
        self.cpu_threads, self._threads_before = cpu_threads, None
        # Collection state lives outside nn.Module: its __setattr__ costs
        # microseconds per assignment, and collection assigns on every step.
        self.play = _PlayState(ReplayBuffer(replay_size, env.observation_space.shape), np.random.default_rng(seed))

    @property
    def episode_returns(self) -> list[float]:
        return self.play.returns

    @property
    def episode_lengths(self) -> list[int]:
        return self.play.lengths

    # ------------------------------------------------------------ acting
    def epsilon_at(self, env_steps: int) -> float:
        explored = max(0, env_steps - self.warmup_steps)
        fraction = min(1.0, explored / self.epsilon_decay_steps)
        return self.epsilon_start + fraction * (self.epsilon_min - self.epsilon_start)

    @torch.no_grad()
    def act(self, obs: Any) -> int:
        """The greedy action."""
        return int(self.net(torch.as_tensor(obs, dtype=torch.float32, device=self.device).unsqueeze(0)).argmax())

    @torch.no_grad()
    def collect(self, steps: int, epsilon: float | None = None) -> None:
        """Play ``steps`` environment steps epsilon-greedily into the replay buffer
        (``epsilon`` None: the decay schedule's value at each step)."""
        play, env, net, device = self.play, self.env, self.net, self.device
        rng, buffer, n_actions = play.rng, play.buffer, env.action_space.n
        obs = play.obs if play.obs is not None else env.reset(seed=self.seed)[0]
        for _ in range(steps):
            eps = self.epsilon_at(play.env_steps) if epsilon is None else epsilon
            if rng.random() < eps:
                action = int(rng.integers(n_actions))
            else:
                action = int(net(torch.as_tensor(obs, dtype=torch.float32, device=device).unsqueeze(0)).argmax())
            next_obs, reward, terminated, truncated, _ = env.step(action)
            buffer.add(obs, action, reward, next_obs, terminated)
            play.env_steps += 1
            play.episode_return += float(reward)
            play.episode_length += 1
            if terminated or truncated:
                play.returns.append(play.episode_return)
                play.lengths.append(play.episode_length)
                play.episode_return, play.episode_length = 0.0, 0
                next_obs, _ = env.reset()
            obs = next_obs
        play.obs = obs

    # ----------------------------------------------------------- learning
    def on_fit_start(self) -> None:
        # One step is a forward pass on one observation and a batch of 64: more
        # threads only wait on each other (measured 1.2x slower with 2, and far
        # slower when parallel sweep jobs share the cores).
        if self.device.type == "cpu" and self.cpu_threads:
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(self.cpu_threads)
        self.collect(self.warmup_steps, epsilon=1.0)  # a random warm-up fills the buffer
        self.play.returns.clear()
        self.play.lengths.clear()

    def train_dataloader(self) -> DataLoader:
        return DataLoader(_Steps(self.steps_per_epoch), batch_size=None)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.collect(self.train_every)
        obs, actions, rewards, next_obs, terminated = (
            torch.as_tensor(a, device=self.device) for a in self.play.buffer.sample(self.batch_size, self.play.rng)
        )
        q = self.net(obs).gather(1, actions.unsqueeze(1)).squeeze(1)
        with torch.no_grad():
            target = rewards + self.gamma * (1.0 - terminated) * self.target(next_obs).max(dim=1).values
        loss = nn.functional.smooth_l1_loss(q, target)  # Huber, as in the DQN paper's clipped error
        if (self.global_step + 1) % self.target_update == 0:
            self.target.load_state_dict(self.net.state_dict())
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=self.batch_size)
        return loss

    def on_train_epoch_end(self) -> None:
        play = self.play
        returns, lengths = play.returns[play.epoch_first_episode :], play.lengths[play.epoch_first_episode :]
        play.epoch_first_episode = len(play.returns)
        self.log("train/epsilon", self.epsilon_at(play.env_steps))
        if returns:  # an epoch shorter than one episode has none to report
            self.log("train/return", float(np.mean(returns)))
            self.log("train/episode_length", float(np.mean(lengths)))

    def teardown(self, stage: str) -> None:
        if self._threads_before is not None:
            torch.set_num_threads(self._threads_before)
            self._threads_before = None

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return self.optimizer_factory(self.net.parameters())
