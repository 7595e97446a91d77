"""The reinforcement-learning family: ``env=`` + ``agent=`` instead of ``data=``.

Train the agent (an exact solver, a tabular TD learner, or DQN through
Lightning), log what it learned per episode (per iteration for the solvers,
per epoch for DQN), then score its greedy policy over ``agent.eval_episodes``
fresh episodes: ``test/mean_return``, ``test/std_return``,
``test/mean_episode_length``, ``test/success_rate`` where the environment has
a goal, and for tabular agents ``test/start_value`` (and ``test/iterations``
for the solvers). Pictures: the policy over the value heat map for grid
worlds, the learning curve for learning agents.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from sweeplab.config import choice, overrides
from sweeplab.data.base import Task
from sweeplab.record import tracking
from sweeplab.rl import envs

ENV_OPTIONS = ("frozen_lake", "cliff_walking", "taxi", "cartpole")


@functools.cache
def agent_options() -> dict[str, type]:
    """Every conf/agent option and its class (read once: the shipped files do not change). The
    classes are the agents' settings; none imports Lightning (DQN's module does, when built)."""
    from importlib import resources

    options = {}
    for entry in sorted(resources.files("sweeplab.conf.agent").iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            target = OmegaConf.create(entry.read_text())._target_
            options[entry.name[: -len(".yaml")]] = hydra.utils.get_class(target)
    return options


def check_selection(cfg: DictConfig) -> None:
    """env= and agent= come together."""
    if cfg.get("env") and not cfg.get("agent"):
        raise ValueError(f"env={choice('env', cfg.env.get('id'))} needs an agent: add agent= one of {', '.join(agent_options())}")
    if cfg.get("agent") and not cfg.get("env"):
        raise ValueError(f"agent={choice('agent', cfg.agent._target_)} needs an environment: add env= one of {', '.join(ENV_OPTIONS)}")


def uses_network(cfg: DictConfig) -> bool:
    return bool(getattr(hydra.utils.get_class(cfg.agent._target_), "uses_network", False))


def log_series(logger: Any, series: dict[str, np.ndarray]) -> None:
    """Values per episode (or iteration), step = its index. MLflow gets them in
    batches of 1000 (one call per point costs ~9 ms on SQLite)."""
    if logger is None or not series:
        return
    if tracking.is_mlflow_logger(logger):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points = [Metric(key, float(v), now, step) for key, values in series.items() for step, v in enumerate(values)]
        for start in range(0, len(points), 1000):
            logger.experiment.log_batch(logger.run_id, metrics=points[start : start + 1000])
        return
    for step in range(max(len(v) for v in series.values())):
        logger.log_metrics({k: float(v[step]) for k, v in series.items() if step < len(v)}, step=step)


def evaluate(env: Any, act: Any, episodes: int, seed: int) -> dict[str, float]:
    """The greedy policy ``act(observation) -> action`` over ``episodes`` episodes."""
    returns, lengths, goals = np.zeros(episodes), np.zeros(episodes), []
    obs, _ = env.reset(seed=seed)
    for episode in range(episodes):
        if episode:
            obs, _ = env.reset()
        total, steps, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            total += float(reward)
            steps += 1
            done = terminated or truncated
        returns[episode], lengths[episode] = total, steps
        goals.append(envs.reached_goal(env, reward, terminated))
    metrics = {
        "test/mean_return": float(returns.mean()),
        "test/std_return": float(returns.std()),
        "test/mean_episode_length": float(lengths.mean()),
    }
    if goals and goals[0] is not None:
        metrics["test/success_rate"] = float(np.mean(goals))
    return metrics


def _grid_marks(env: Any) -> dict[int, str]:
    """Letters for the cells that are not decisions: holes, cliff, goal."""
    unwrapped = env.unwrapped
    if getattr(unwrapped, "desc", None) is not None:  # FrozenLake: S F H G
        letters = [c.decode() for c in unwrapped.desc.flatten()]
        return {s: c for s, c in enumerate(letters) if c in "HG"}
    cliff = getattr(unwrapped, "_cliff", None)
    marks = {int(s): "C" for s in np.flatnonzero(cliff)} if cliff is not None else {}
    marks[unwrapped.observation_space.n - 1] = "G"  # CliffWalking's goal: the bottom-right cell
    return marks


class ReinforcementFamily:
    """An agent in an environment; its run has the same MLflow layout as any other."""

    kind = "rl"
    resumable = False
    task = Task.REINFORCEMENT

    def __init__(self, cfg: DictConfig) -> None:
        self.cfg = cfg
        self.loggers: list[Any] = []
        self.run_dir = Path(".")

    @property
    def lightning(self) -> bool:
        """A network agent trains in a Lightning Trainer; a tabular one needs neither Lightning nor torch."""
        return uses_network(self.cfg)

    def prepare(self) -> None:
        from sweeplab.config import check_accelerator
        from sweeplab.families.base import quiet_lightning, seed_everything

        cfg = self.cfg
        seed_everything(cfg.seed, torch=self.lightning)
        self.env = hydra.utils.instantiate(cfg.env)
        self.eval_env = hydra.utils.instantiate(cfg.env)
        settings = OmegaConf.to_container(cfg.agent, resolve=True)
        self.eval_episodes = settings.pop("eval_episodes", 100)
        if isinstance(self.eval_episodes, bool) or not isinstance(self.eval_episodes, int) or self.eval_episodes < 1:
            raise ValueError(f"agent.eval_episodes={self.eval_episodes!r}: must be a positive integer")
        agent_class = hydra.utils.get_class(settings["_target_"])
        name = next((k for k, v in agent_options().items() if v is agent_class), agent_class.__name__)
        if not agent_class.fits(self.env):
            fitting = [k for k, v in agent_options().items() if v.fits(self.env)]
            raise ValueError(
                f"agent={name} needs {agent_class.needs}; env={choice('env', envs.env_id(self.env))} has "
                f"{envs.describe_states(self.env)}: use agent={', '.join(fitting) or '(none)'}"
            )
        self.agent_name = name
        import inspect

        taken = [p for p in inspect.signature(agent_class).parameters]
        unknown = [k for k in settings if k != "_target_" and k not in taken]
        if unknown:
            raise ValueError(f"agent.{unknown[0]}: agent={name} has no such setting; it takes {', '.join(taken + ['eval_episodes'])}")
        self.agent = hydra.utils.instantiate(settings)
        if self.agent.uses_network:  # the pairing and the agent's settings are checked: now Lightning
            check_accelerator(cfg)
            quiet_lightning()
            net = hydra.utils.instantiate(
                cfg.model, input_shape=tuple(self.env.observation_space.shape), num_outputs=int(self.env.action_space.n), _convert_="all"
            )
            optimizer = hydra.utils.instantiate(cfg.optimizer, _convert_="all")
            self.module = self.agent.module(net, optimizer, self.env, cfg.seed)

    def attach(self, loggers: list[Any], run_dir: Path) -> None:
        self.loggers, self.run_dir = loggers, run_dir
        if self.agent.uses_network:
            from lightning.pytorch.callbacks import RichProgressBar

            self.trainer = hydra.utils.instantiate(
                self.cfg.trainer,
                max_epochs=self.agent.epochs,
                logger=loggers or False,
                callbacks=[RichProgressBar(leave=False)],
                enable_checkpointing=False,
                default_root_dir=str(run_dir),
            )

    def fit(self, start_from: Path | None = None) -> tuple[dict[str, float], list[Path]]:
        from sweeplab.reports import files as reports

        title = f"{self.agent_name} on {envs.env_id(self.env)}"
        seed = int(self.cfg.seed)
        if self.agent.uses_network:
            self.trainer.fit(self.module)
            if self.trainer.interrupted:
                raise KeyboardInterrupt
            self.module.eval()
            act = self.module.act
            returns = np.array(self.module.episode_returns)
            metrics = {k: float(v) for k, v in self.trainer.callback_metrics.items() if k.startswith("train/")}
            import torch

            torch.save(self.module.net.state_dict(), self.run_dir / "q_network.pt")
            saved = [self.run_dir / "q_network.pt"]
        else:
            with _progress(getattr(self.agent, "episodes", None), title) as advance:
                self.agent.train(self.env, seed, advance)
            act = self.agent.act
            for logger in self.loggers:
                log_series(logger, self.agent.history)
            returns = self.agent.history.get("train/return")
            metrics = {k: float(v[-1]) for k, v in self.agent.history.items()}
            metrics.update({f"test/{k}": v for k, v in self.agent.summary.items()})
            metrics["test/start_value"] = self.agent.start_value(self.env)
            saved = [self._save_table()]
        tested = evaluate(self.eval_env, act, self.eval_episodes, seed + 1)
        metrics.update(tested)
        for logger in self.loggers:
            logger.log_metrics(tested | {k: v for k, v in metrics.items() if k.startswith("test/")}, step=0)
            if not tracking.is_mlflow_logger(logger):
                logger.save()
        files = list(saved)
        if returns is not None and len(returns):
            files.append(reports.write_learning_curve(returns, self.run_dir, title))
        shape = envs.grid_shape(self.env)
        if shape is not None and not self.agent.uses_network:
            files.append(
                reports.write_policy_map(
                    self.agent.values,
                    self.agent.policy,
                    shape,
                    envs.ARROWS[envs.env_id(self.env)],
                    _grid_marks(self.env),
                    self.run_dir,
                    f"{title}\ngreedy policy over V(s)",
                )
            )
        return metrics, files

    def served_model(self) -> tuple[Any, str]:
        """The greedy policy as a network from observations to action values: the
        DQN's Q-network, or a tabular agent's table (its Q-table, or for the exact
        solvers a one-hot table of the chosen actions) behind a lookup."""
        if self.agent.uses_network:
            return self.module.net.cpu().eval(), "pytorch"
        q = getattr(self.agent, "q", None)
        table = q if q is not None else np.eye(int(self.env.action_space.n))[self.agent.policy]
        from sweeplab.rl.policy import PolicyTable

        return PolicyTable(table), "pytorch"

    def serving_spec(self, flavor: str) -> dict[str, Any]:
        from sweeplab.record.model import new_spec

        shape = [1] if envs.is_tabular(self.env) else list(self.env.observation_space.shape)
        # action values for the agents that learn them (DQN, Q-learning, SARSA); the exact solvers' table is one-hot
        learned = self.agent.uses_network or getattr(self.agent, "q", None) is not None
        states = int(self.env.observation_space.n) if envs.is_tabular(self.env) else None  # served input is checked against it
        return new_spec(flavor, Task.REINFORCEMENT.value, shape, action_values=learned, states=states)

    def serving_example(self, spec: dict[str, Any]) -> np.ndarray:
        """A few observations: the first states, or samples of the observation space."""
        if envs.is_tabular(self.env):
            return np.arange(min(5, int(self.env.observation_space.n)), dtype=np.float32).reshape(-1, 1)
        space = self.env.observation_space
        space.seed(int(self.cfg.seed))
        return np.stack([space.sample() for _ in range(5)]).astype(np.float32)

    def _save_table(self) -> Path:
        """The tabular agent's values, policy and (for TD learners) Q-table."""
        path = self.run_dir / "policy.npz"
        arrays = {"values": self.agent.values, "policy": self.agent.policy}
        if getattr(self.agent, "q", None) is not None:
            arrays["q"] = self.agent.q
        np.savez(path, **arrays)
        return path


class _progress:
    """A progress bar over training episodes (transient: the results table follows)."""

    def __init__(self, total: int | None, title: str) -> None:
        self.total, self.title = total, title

    def __enter__(self) -> Any:
        if not self.total:
            return None
        from rich.progress import Progress

        self.bar = Progress(transient=True)
        self.bar.start()
        task = self.bar.add_task(self.title, total=self.total)
        every = max(1, self.total // 200)

        def advance(done: int) -> None:
            if done % every == 0 or done == self.total:
                self.bar.update(task, completed=done)

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self.total:
            self.bar.stop()


# What an RL run does not read: the data set and everything that trains on it;
# tabular agents need no network, optimizer or Lightning trainer either.
UNUSED_BY_RL = ("data", "loss", "scheduler", "callbacks", "param_groups", "monitor", "monitor_mode")
UNUSED_BY_TABULAR = ("model", "optimizer", "trainer")


def drop_unused(cfg: DictConfig) -> None:
    from omegaconf import open_dict

    check_selection(cfg)
    unused = UNUSED_BY_RL + (() if uses_network(cfg) else UNUSED_BY_TABULAR)
    with open_dict(cfg):
        for key in unused:
            cfg.pop(key, None)
        if uses_network(cfg):
            _epochs_from_the_budget(cfg)


def _epochs_from_the_budget(cfg: DictConfig) -> None:
    """A network agent trains ``agent.total_steps`` environment steps, in epochs of
    ``agent.steps_per_epoch``: ``trainer.max_epochs`` is set to what that makes, so the
    printed and logged config says what runs; giving it is refused, naming the budget."""
    import inspect

    parameters = inspect.signature(hydra.utils.get_class(cfg.agent._target_)).parameters
    if "total_steps" not in parameters:
        return
    given = next((o for o in overrides() if o.lstrip("+~").split("=", 1)[0] == "trainer.max_epochs"), None)
    if given:
        raise ValueError(
            f"{given}: agent={choice('agent', 'dqn')} trains for agent.total_steps environment steps "
            f"(now {cfg.agent.get('total_steps', parameters['total_steps'].default)}); set that instead: trainer.max_epochs follows from it"
        )
    total, per_epoch, every = (cfg.agent.get(k, parameters[k].default) for k in ("total_steps", "steps_per_epoch", "train_every"))
    if all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (total, per_epoch, every)
    ):  # else the agent says what is wrong
        cfg.trainer.max_epochs = -(-total // (per_epoch * every))
