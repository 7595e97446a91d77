"""Tabular agents: exact MDP solvers and temporal-difference learners.

``ValueIteration`` and ``PolicyIteration`` solve the MDP from the
environment's transition table (``env.unwrapped.P``); ``QLearning`` and
``Sarsa`` learn a Q-table from experience with an epsilon-greedy policy whose
epsilon decays each episode (``epsilon * epsilon_decay**episode``, floored at
``epsilon_min``). Each leaves ``values`` (V per state) and ``policy`` (the
greedy action per state); what it logged while training is its ``history``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from sweeplab.rl import envs


def _check(name: str, value: Any, low: float, high: float, closed_high: bool = True) -> None:
    ok = (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and low <= value
        and (value <= high if closed_high else value < high)
    )
    if not ok:
        bracket = "]" if closed_high else ")"
        raise ValueError(f"agent.{name}={value!r}: must be a number in [{low}, {high}{bracket}")


def _check_count(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"agent.{name}={value!r}: must be a positive integer")


class TabularAgent:
    """What every tabular agent shares: a greedy policy over a table, and its checks."""

    needs = "discrete states and actions (env=frozen_lake, cliff_walking or taxi)"
    uses_network = False

    def __init__(self, gamma: float) -> None:
        self.gamma = gamma
        self.values: np.ndarray | None = None
        self.policy: np.ndarray | None = None
        self.history: dict[str, np.ndarray] = {}
        self.summary: dict[str, float] = {}

    @classmethod
    def fits(cls, env: Any) -> bool:
        return envs.is_tabular(env)

    def act(self, state: Any) -> int:
        return int(self.policy[int(state)])  # type: ignore[index]

    def start_value(self, env: Any) -> float:
        """Expected value of the start state under the start distribution."""
        start = envs.start_distribution(env)
        return float(np.dot(start, self.values)) if start is not None else float(self.values[0])  # type: ignore[index]


# ----------------------------------------------------------------- exact solvers


def transition_arrays(env: Any) -> tuple[np.ndarray, np.ndarray]:
    """From ``P[s][a] = [(p, s', r, terminated), ...]``: expected rewards R[s, a]
    and discounted-continuation weights C[s, a, s'] (probability of reaching
    s' and going on; a terminal transition contributes no future value)."""
    table = env.unwrapped.P
    n_states, n_actions = env.observation_space.n, env.action_space.n
    rewards = np.zeros((n_states, n_actions))
    onward = np.zeros((n_states, n_actions, n_states))
    for s in range(n_states):
        for a in range(n_actions):
            for p, s2, r, terminated in table[s][a]:
                rewards[s, a] += p * r
                if not terminated:
                    onward[s, a, s2] += p
    return rewards, onward


class ExactSolver(TabularAgent):
    needs = "a transition table env.unwrapped.P (env=frozen_lake, cliff_walking or taxi)"

    def __init__(self, gamma: float = 0.99, theta: float = 1e-10, max_iterations: int = 100_000) -> None:
        _check("gamma", gamma, 0.0, 1.0, closed_high=False)  # gamma < 1: a unique, finite solution
        _check("theta", theta, 0.0, np.inf, closed_high=False)
        _check_count("max_iterations", max_iterations)
        super().__init__(gamma)
        self.theta, self.max_iterations = theta, max_iterations

    @classmethod
    def fits(cls, env: Any) -> bool:
        return envs.is_tabular(env) and envs.has_model(env)

    def _q(self, rewards: np.ndarray, onward: np.ndarray, values: np.ndarray) -> np.ndarray:
        return rewards + self.gamma * onward @ values


class ValueIteration(ExactSolver):
    """Bellman optimality backups until the largest change is below ``theta``."""

    def train(self, env: Any, seed: int, progress: Callable[[int], None] | None = None) -> None:
        rewards, onward = transition_arrays(env)
        values = np.zeros(env.observation_space.n)
        deltas = []
        for _ in range(self.max_iterations):
            new = self._q(rewards, onward, values).max(axis=1)
            deltas.append(float(np.abs(new - values).max()))
            values = new
            if deltas[-1] < self.theta:
                break
        else:
            raise RuntimeError(f"value iteration did not converge to theta={self.theta} in agent.max_iterations={self.max_iterations}")
        self.values = values
        self.policy = self._q(rewards, onward, values).argmax(axis=1)
        self.history = {"train/delta": np.array(deltas)}
        self.summary = {"iterations": float(len(deltas))}


class PolicyIteration(ExactSolver):
    """Exact policy evaluation (a linear solve) and greedy improvement until the policy is stable."""

    def train(self, env: Any, seed: int, progress: Callable[[int], None] | None = None) -> None:
        rewards, onward = transition_arrays(env)
        n_states = env.observation_space.n
        states = np.arange(n_states)
        policy = np.zeros(n_states, dtype=int)
        changed_per_iteration = []
        for _ in range(self.max_iterations):
            values = np.linalg.solve(np.eye(n_states) - self.gamma * onward[states, policy], rewards[states, policy])
            q = self._q(rewards, onward, values)
            # Keep the current action unless another is clearly better: ties must not cycle.
            better = q.max(axis=1) > q[states, policy] + 1e-12
            new = np.where(better, q.argmax(axis=1), policy)
            changed_per_iteration.append(int(better.sum()))
            if not better.any():
                break
            policy = new
        else:
            raise RuntimeError(f"policy iteration did not settle in agent.max_iterations={self.max_iterations}")
        self.values, self.policy = values, policy
        self.history = {"train/policy_changes": np.array(changed_per_iteration, dtype=float)}
        self.summary = {"iterations": float(len(changed_per_iteration))}


# -------------------------------------------------------------- learning agents


class TemporalDifference(TabularAgent):
    """Epsilon-greedy episodes updating a Q-table; subclasses say which target."""

    learns = True

    def __init__(
        self,
        gamma: float = 0.99,
        learning_rate: float = 0.1,
        epsilon: float = 1.0,
        epsilon_min: float = 0.01,
        epsilon_decay: float = 0.999,
        episodes: int = 2000,
    ) -> None:
        _check("gamma", gamma, 0.0, 1.0)
        _check("learning_rate", learning_rate, 0.0, 1.0)
        if learning_rate == 0:
            raise ValueError("agent.learning_rate=0: must be above 0 (nothing would be learned)")
        _check("epsilon", epsilon, 0.0, 1.0)
        _check("epsilon_min", epsilon_min, 0.0, 1.0)
        _check("epsilon_decay", epsilon_decay, 0.0, 1.0)
        _check_count("episodes", episodes)
        super().__init__(gamma)
        self.learning_rate, self.episodes = learning_rate, episodes
        self.epsilon, self.epsilon_min, self.epsilon_decay = epsilon, epsilon_min, epsilon_decay
        self.q: np.ndarray | None = None

    @staticmethod
    def _choose(q_row: np.ndarray, epsilon: float, n_actions: int, rng: np.random.Generator) -> int:
        if rng.random() < epsilon:
            return int(rng.integers(n_actions))
        best = np.flatnonzero(q_row == q_row.max())  # random tie-break: an all-zero row must not always pick action 0
        return int(best[0] if len(best) == 1 else rng.choice(best))

    on_policy = False  # SARSA: the target uses the action the policy takes next

    def train(self, env: Any, seed: int, progress: Callable[[int], None] | None = None) -> None:
        rng = np.random.default_rng(seed)
        n_actions = env.action_space.n
        q = np.zeros((env.observation_space.n, n_actions))
        returns, lengths, epsilons = (np.zeros(self.episodes) for _ in range(3))
        alpha, gamma, on_policy, choose = self.learning_rate, self.gamma, self.on_policy, self._choose
        state, _ = env.reset(seed=seed)
        for episode in range(self.episodes):
            if episode:
                state, _ = env.reset()
            epsilon = max(self.epsilon_min, self.epsilon * self.epsilon_decay**episode)
            action = choose(q[state], epsilon, n_actions, rng)
            total, steps, done = 0.0, 0, False
            while not done:
                next_state, reward, terminated, truncated, _ = env.step(action)
                done = terminated or truncated
                # A terminal state has no future; a time limit (truncated) cuts an episode, not the MDP.
                if on_policy:
                    next_action = choose(q[next_state], epsilon, n_actions, rng) if not terminated else 0
                    future = 0.0 if terminated else gamma * q[next_state, next_action]
                else:
                    future = 0.0 if terminated else gamma * q[next_state].max()
                q[state, action] += alpha * (reward + future - q[state, action])
                if not on_policy:  # chosen after the update, as the textbook loop does
                    next_action = choose(q[next_state], epsilon, n_actions, rng) if not done else 0
                state, action = next_state, next_action
                total += reward
                steps += 1
            returns[episode], lengths[episode], epsilons[episode] = total, steps, epsilon
            if progress is not None:
                progress(episode + 1)
        self.q = q
        self.values, self.policy = q.max(axis=1), q.argmax(axis=1)
        self.history = {"train/return": returns, "train/episode_length": lengths, "train/epsilon": epsilons}


class QLearning(TemporalDifference):
    """Off-policy: the target bootstraps from the best next action."""


class Sarsa(TemporalDifference):
    """On-policy: the target bootstraps from the action the policy will take."""

    on_policy = True
