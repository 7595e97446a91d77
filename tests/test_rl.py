"""env= + agent=: MDP solvers, tabular TD learners and DQN, through the same run layout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sweeplab.families.rl import evaluate
from sweeplab.rl import envs, tabular

from conftest import cli, runs_of, store_overrides, train_in_process, train_listing_imports

FITTING = [
    *[
        (env, agent)
        for env in ("frozen_lake", "cliff_walking", "taxi")
        for agent in ("value_iteration", "policy_iteration", "q_learning", "sarsa")
    ],
    ("cartpole", "dqn"),
]
TINY = {
    "q_learning": ["agent.episodes=20", "agent.eval_episodes=5"],
    "sarsa": ["agent.episodes=20", "agent.eval_episodes=5"],
    "value_iteration": ["agent.eval_episodes=5"],
    "policy_iteration": ["agent.eval_episodes=5"],
    "dqn": ["agent.total_steps=200", "agent.steps_per_epoch=100", "agent.warmup_steps=64", "agent.eval_episodes=3"],
}


def _bellman_by_hand(env, gamma: float, sweeps: int = 5000) -> np.ndarray:
    """Value iteration written straight from P[s][a] = [(p, s', r, done)], loops and all."""
    table, n = env.unwrapped.P, env.observation_space.n
    values = np.zeros(n)
    for _ in range(sweeps):
        values = np.array(
            [
                max(sum(p * (r + (0.0 if done else gamma * values[s2])) for p, s2, r, done in table[s][a]) for a in table[s])
                for s in range(n)
            ]
        )
    return values


@pytest.mark.parametrize("map_name", ["4x4", "8x8"])
def test_value_and_policy_iteration_agree_on_frozen_lake(map_name: str) -> None:
    env = envs.make_env("FrozenLake-v1", map_name=map_name, is_slippery=True)
    vi, pi = tabular.ValueIteration(gamma=0.99), tabular.PolicyIteration(gamma=0.99)
    vi.train(env, seed=0)
    pi.train(env, seed=0)
    np.testing.assert_allclose(vi.values, pi.values, atol=1e-6)
    assert pi.summary["iterations"] < vi.summary["iterations"]  # few improvements vs hundreds of sweeps
    if map_name == "4x4":
        np.testing.assert_allclose(vi.values, _bellman_by_hand(env, 0.99), atol=1e-6)
    # Both greedy policies are optimal: the same action value in every state, ties aside.
    rewards, onward = tabular.transition_arrays(env)
    q = rewards + 0.99 * onward @ vi.values
    states = np.arange(len(vi.values))
    np.testing.assert_allclose(q[states, vi.policy], q[states, pi.policy], atol=1e-6)


def test_optimal_policy_success_rate_on_slippery_frozen_lake() -> None:
    env = envs.make_env("FrozenLake-v1", map_name="4x4", is_slippery=True)
    solver = tabular.ValueIteration(gamma=0.99)
    solver.train(env, seed=0)
    scores = evaluate(envs.make_env("FrozenLake-v1", map_name="4x4", is_slippery=True), solver.act, 2000, seed=1)
    assert 0.70 < scores["test/success_rate"] < 0.78  # the known optimum is about 0.74
    assert scores["test/mean_return"] == scores["test/success_rate"]  # reward 1 only at the goal
    assert solver.start_value(env) == pytest.approx(solver.values[0])  # one start state


def test_same_seed_gives_identical_returns_and_another_seed_does_not() -> None:
    def returns(seed: int) -> np.ndarray:
        agent = tabular.QLearning(episodes=300)
        agent.train(envs.make_env("FrozenLake-v1", is_slippery=True), seed=seed)
        return agent.history["train/return"]

    np.testing.assert_array_equal(returns(3), returns(3))
    assert not np.array_equal(returns(3), returns(4))


def test_sarsa_learns_the_safe_path_and_q_learning_the_edge_on_cliff_walking() -> None:
    """Sutton & Barto's example 6.6: the greedy paths differ (13 steps along the cliff vs a longer safe one)."""
    lengths = {}
    for agent in (tabular.QLearning(episodes=1000), tabular.Sarsa(episodes=1000)):
        agent.train(envs.make_env("CliffWalking-v1", max_episode_steps=200), seed=0)
        lengths[type(agent).__name__] = evaluate(envs.make_env("CliffWalking-v1", max_episode_steps=200), agent.act, 1, seed=0)[
            "test/mean_episode_length"
        ]
    assert lengths["QLearning"] == 13
    assert lengths["Sarsa"] > 13


@pytest.mark.parametrize(("env", "agent"), FITTING)
def test_every_environment_runs_with_every_agent_that_fits(env: str, agent: str, store, tmp_path: Path) -> None:
    metrics = train_in_process([f"env={env}", f"agent={agent}", *TINY[agent], *store_overrides(store)], tmp_path / "run")
    assert {"test/mean_return", "test/std_return", "test/mean_episode_length"} <= set(metrics)
    assert ("test/success_rate" in metrics) == (env != "cartpole")  # CartPole has no goal, only a length
    if agent in ("value_iteration", "policy_iteration"):
        assert metrics["test/iterations"] >= 1 and "test/start_value" in metrics
    run = runs_of(store["uri"]).iloc[0]
    assert run["status"] == "FINISHED" and run["tags.sweeplab.task"] == "reinforcement"
    assert not any(c.startswith("params.data.") for c in run.index)  # an RL run has no data set


def test_q_learning_solves_deterministic_frozen_lake_within_its_default_budget(store, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    metrics = train_in_process(["env=frozen_lake", "env.is_slippery=false", "agent=q_learning", *store_overrides(store)], tmp_path / "run")
    assert metrics["test/success_rate"] == 1.0
    assert metrics["test/mean_episode_length"] == 6  # the shortest path
    run = runs_of(store["uri"]).iloc[0]
    client = MlflowClient(store["uri"])
    history = client.get_metric_history(run["run_id"], "train/return")
    assert [m.step for m in history] == list(range(2000))  # one point per episode, none twice
    epsilons = [m.value for m in client.get_metric_history(run["run_id"], "train/epsilon")]
    assert epsilons[0] == 1.0 and epsilons[-1] == pytest.approx(max(0.01, 0.999**1999))
    artifacts = {a.path for a in client.list_artifacts(run["run_id"])}
    assert {"config.yaml", "policy.npz", "policy_map.png", "learning_curve.png"} <= artifacts
    assert not any("confusion" in a or "predictions" in a for a in artifacts)  # classification-only files
    saved = np.load(tmp_path / "run" / "policy.npz")
    assert saved["q"].shape == (16, 4) and (saved["policy"] == saved["q"].argmax(axis=1)).all()


@pytest.mark.slow
def test_dqn_on_cartpole_clearly_beats_a_random_policy(store, tmp_path: Path) -> None:
    overrides = [
        "env=cartpole",
        "agent=dqn",
        "agent.total_steps=3000",
        "agent.epsilon_decay_steps=2000",
        "model.hidden_sizes=[128,128]",
        "model.dropout=0",
        "optimizer.lr=0.0005",
        *store_overrides(store),
    ]
    metrics = train_in_process(overrides, tmp_path / "run")
    rng = np.random.default_rng(0)
    random_policy = evaluate(envs.make_env("CartPole-v1"), lambda obs: int(rng.integers(2)), 100, seed=43)
    assert random_policy["test/mean_return"] < 30  # a random policy drops the pole within ~22 steps
    assert metrics["test/mean_return"] > random_policy["test/mean_return"] + 50
    run = runs_of(store["uri"]).iloc[0]
    assert run["params.optimizer.lr"] == "0.0005" and run["params.model.hidden_sizes"] == "[128, 128]"
    # The logged config says what ran: 3000 steps in epochs of 1000 (conf/trainer says 10).
    from mlflow.tracking import MlflowClient
    from omegaconf import OmegaConf

    assert run["params.trainer.max_epochs"] == "3" and OmegaConf.load(tmp_path / "run" / "config.yaml").trainer.max_epochs == 3
    assert len(MlflowClient(store["uri"]).get_metric_history(run["run_id"], "train/loss")) == 3
    assert (tmp_path / "run" / "q_network.pt").exists() and (tmp_path / "run" / "learning_curve.png").exists()
    # Same seed, same returns: a second run of the same config repeats the first (a short one suffices).
    short = [*overrides, "agent.total_steps=600", "agent.steps_per_epoch=200", "agent.warmup_steps=100", "agent.eval_episodes=3"]
    first, again = (train_in_process(short, tmp_path / name) for name in ("first", "again"))
    assert again["test/mean_return"] == first["test/mean_return"] and again["train/return"] == first["train/return"]


@pytest.mark.slow
def test_a_dqn_budget_is_its_steps_and_trainer_max_epochs_is_refused(tmp_path: Path) -> None:
    result = cli(["env=cartpole", "agent=dqn", "trainer.max_epochs=3"], cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "sweeplab-train: error: trainer.max_epochs=3: agent=dqn trains for agent.total_steps environment steps (now 30000); "
        "set that instead: trainer.max_epochs follows from it"
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["env=cartpole", "agent=q_learning"],
            "agent=q_learning needs discrete states and actions (env=frozen_lake, cliff_walking or taxi); env=cartpole has continuous states (4 numbers): use agent=dqn",
        ),
        (
            ["env=frozen_lake", "agent=dqn"],
            "agent=dqn needs vector observations and discrete actions (env=cartpole); env=frozen_lake has 16 discrete states: use agent=policy_iteration, q_learning, sarsa, value_iteration",
        ),
        (["env=taxi"], "env=taxi needs an agent: add agent= one of dqn, policy_iteration, q_learning, sarsa, value_iteration"),
        (["agent=sarsa"], "agent=sarsa needs an environment: add env= one of frozen_lake, cliff_walking, taxi, cartpole"),
        (["env=frozen_lake", "agent=q_learning", "env.map_name=9x9"], "env.map_name='9x9': choose one of 4x4, 8x8"),
        (["env=frozen_lake", "agent=sarsa", "agent.epsilon_decay=1.5"], "agent.epsilon_decay=1.5: must be a number in [0.0, 1.0]"),
        (["env=taxi", "agent=q_learning", "+env.rain=1"], "env.rain: Taxi-v4 has no such argument; it takes is_rainy, fickle_passenger"),
    ],
)
def test_bad_pairings_and_values_are_refused_before_a_run_exists(args: list[str], message: str, tmp_path: Path) -> None:
    """Refused before a run exists, and before Lightning is imported: the line comes in about a
    second, not after Lightning's imports (DQN's settings are checked without its module)."""
    result, imported = train_listing_imports([*args, f"paths.outputs={tmp_path}"], tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not imported & {"lightning", "torchmetrics", "torchvision"}, imported
    assert not (tmp_path / "mlflow.db").exists() or runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}").empty


@pytest.mark.slow
def test_mdp_preset_from_the_command_line_then_compared(tmp_path: Path) -> None:
    result = cli(["experiment=mdp_frozen_lake", "seed=1", f"paths.outputs={tmp_path}"], cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = runs_of(f"sqlite:///{tmp_path / 'mlflow.db'}", "mdp_frozen_lake").set_index("params.agent")
    assert len(runs) == 4 and (runs["status"] == "FINISHED").all()
    success = runs["metrics.test/success_rate"]
    assert success["value_iteration"] == success["policy_iteration"]  # the same optimal policy, the same episodes
    assert success["q_learning"] > success["value_iteration"] - 0.15  # the learner approaches the optimum
    assert runs["tags.sweeplab.sweep_id"].nunique() == 1
    exe = Path(sys.executable).with_name("sweeplab")
    shown = subprocess.run(
        [
            str(exe),
            "compare",
            "--experiment",
            "mdp_frozen_lake",
            "--metric",
            "test/success_rate",
            "--also",
            "test/start_value",
            "--store",
            f"sqlite:///{tmp_path / 'mlflow.db'}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert shown.returncode == 0, shown.stderr
    assert "value_iteration" in shown.stdout and "start_value" in shown.stdout
    assert "reproduce: sweeplab-train agent=value_iteration seed=1 experiment=mdp_frozen_lake" in shown.stdout


def test_eval_refuses_an_rl_run_in_one_line(store, tmp_path: Path) -> None:
    from sweeplab.evaluate import evaluate as evaluate_run

    train_in_process(["env=frozen_lake", "agent=value_iteration", "agent.eval_episodes=5", *store_overrides(store)], tmp_path / "run")
    run_id = runs_of(store["uri"]).iloc[0]["run_id"]
    with pytest.raises(ValueError, match="is a reinforcement-learning run: its greedy policy was scored after training"):
        evaluate_run(run_id, store=store["uri"])
