"""Environment steps per second: sweeplab's agents vs a hand-written loop over
the same Gymnasium environment doing the same work (target ratio <= 1.15).

- Tabular Q-learning on FrozenLake 4x4 (slippery): ``QLearning.train`` vs the
  textbook loop (epsilon-greedy with random tie-break, the same update).
- DQN's data collection on CartPole: ``DQNModule.collect`` (epsilon-greedy
  with the Q-network, into the replay buffer) vs a loop that does the same.

    python benchmarks/rl_steps.py --repeat 5

Same seed, same episodes: both sides take the same actions, so the step
counts match and the ratio is the cost of the framework's loop.
"""

from __future__ import annotations

import argparse
import statistics
import time
from functools import partial

import numpy as np


def hand_q_learning(env, episodes: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    n_actions = env.action_space.n
    q = np.zeros((env.observation_space.n, n_actions))
    steps = 0
    state, _ = env.reset(seed=seed)
    for episode in range(episodes):
        if episode:
            state, _ = env.reset()
        epsilon = max(0.01, 0.999**episode)
        done = False
        while not done:
            if rng.random() < epsilon:
                action = int(rng.integers(n_actions))
            else:
                best = np.flatnonzero(q[state] == q[state].max())
                action = int(best[0] if len(best) == 1 else rng.choice(best))
            next_state, reward, terminated, truncated, _ = env.step(action)
            future = 0.0 if terminated else 0.99 * q[next_state].max()
            q[state, action] += 0.1 * (reward + future - q[state, action])
            state = next_state
            steps += 1
            done = terminated or truncated
    return steps


def tabular(repeat: int, episodes: int) -> tuple[float, float]:
    from sweeplab.rl import envs
    from sweeplab.rl.tabular import QLearning

    ours, hand = [], []
    hand_q_learning(envs.make_env("FrozenLake-v1"), 200, seed=0)  # warm-up: first calls pay lazy imports
    QLearning(episodes=200).train(envs.make_env("FrozenLake-v1"), seed=0)
    for i in range(repeat):
        agent = QLearning(episodes=episodes)
        start = time.perf_counter()
        agent.train(envs.make_env("FrozenLake-v1"), seed=i)
        ours.append(agent.history["train/episode_length"].sum() / (time.perf_counter() - start))
        start = time.perf_counter()
        steps = hand_q_learning(envs.make_env("FrozenLake-v1"), episodes, seed=i)
        hand.append(steps / (time.perf_counter() - start))
    return statistics.median(ours), statistics.median(hand)


def hand_collect(env, net, steps: int, epsilon: float, seed: int) -> None:
    import torch

    rng = np.random.default_rng(seed)
    obs_buf = np.zeros((steps, *env.observation_space.shape), dtype=np.float32)
    next_buf, actions, rewards, dones = (
        np.zeros_like(obs_buf),
        np.zeros(steps, np.int64),
        np.zeros(steps, np.float32),
        np.zeros(steps, np.float32),
    )
    obs, _ = env.reset(seed=seed)
    for i in range(steps):
        if rng.random() < epsilon:
            action = int(rng.integers(env.action_space.n))
        else:
            with torch.no_grad():
                action = int(net(torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0)).argmax())
        next_obs, reward, terminated, truncated, _ = env.step(action)
        obs_buf[i], actions[i], rewards[i], next_buf[i], dones[i] = obs, action, reward, next_obs, terminated
        obs = env.reset()[0] if terminated or truncated else next_obs


def dqn(repeat: int, steps: int, epsilon: float) -> tuple[float, float]:
    import torch

    from sweeplab.models.mlp import build_mlp
    from sweeplab.rl import envs
    from sweeplab.rl.dqn import DQN

    ours, hand = [], []
    for i in range(repeat):
        torch.manual_seed(i)
        net = build_mlp((4,), 2, hidden_sizes=[128, 128])
        module = DQN(replay_size=steps).module(net, partial(torch.optim.Adam, lr=1e-3), envs.make_env("CartPole-v1"), seed=i)
        start = time.perf_counter()
        module.collect(steps, epsilon=epsilon)
        ours.append(steps / (time.perf_counter() - start))
        start = time.perf_counter()
        hand_collect(envs.make_env("CartPole-v1"), net, steps, epsilon, seed=i)
        hand.append(steps / (time.perf_counter() - start))
    return statistics.median(ours), statistics.median(hand)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=2000, help="Q-learning episodes per measurement")
    parser.add_argument("--steps", type=int, default=5000, help="DQN collection steps per measurement")
    parser.add_argument("--epsilon", type=float, default=0.1, help="DQN exploration rate while collecting (mostly network actions)")
    args = parser.parse_args()
    ours, hand = tabular(args.repeat, args.episodes)
    print(
        f"Q-learning, FrozenLake 4x4: sweeplab {ours:,.0f} steps/s, hand loop {hand:,.0f} steps/s, ratio (hand/sweeplab) {hand / ours:.3f}"
    )
    ours, hand = dqn(args.repeat, args.steps, args.epsilon)
    print(
        f"DQN collection, CartPole:   sweeplab {ours:,.0f} steps/s, hand loop {hand:,.0f} steps/s, ratio (hand/sweeplab) {hand / ours:.3f}"
    )


if __name__ == "__main__":
    main()
