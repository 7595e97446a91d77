"""Gymnasium's bundled environments (no download), and what sweeplab knows of each.

``conf/env`` options name an environment id and its constructor arguments;
:func:`make_env` builds it and turns Gymnasium's own errors for a bad
argument into one line naming the value and the valid ones.
"""

from __future__ import annotations

from typing import Any

# How an episode counts as reaching the goal, where the environment has one:
# FrozenLake ends in holes too, so only a final reward marks the goal there;
# CliffWalking and Taxi terminate only at theirs.
GOAL = {"FrozenLake-v1": "reward", "CliffWalking-v1": "terminated", "Taxi-v4": "terminated"}
# Grid worlds: the arrow each action draws on the policy map.
ARROWS = {
    "FrozenLake-v1": ("left", "down", "right", "up"),
    "CliffWalking-v1": ("up", "right", "down", "left"),
}
CHOICES = {"map_name": ("4x4", "8x8")}


def make_env(id: str, max_episode_steps: int | None = None, **kwargs: Any) -> Any:
    """``gymnasium.make(id, **kwargs)``; ``max_episode_steps`` null keeps the environment's own limit."""
    import gymnasium as gym

    for key, value in kwargs.items():
        if key in CHOICES and value not in CHOICES[key]:
            raise ValueError(f"env.{key}={value!r}: choose one of {', '.join(CHOICES[key])}")
    if max_episode_steps is not None and (not isinstance(max_episode_steps, int) or max_episode_steps < 1):
        raise ValueError(f"env.max_episode_steps={max_episode_steps!r}: must be a positive integer (or null)")
    try:
        return gym.make(id, max_episode_steps=max_episode_steps, **kwargs)
    except TypeError as exc:  # an argument the environment does not take
        import inspect

        from gymnasium.envs.registration import load_env_creator

        creator = load_env_creator(gym.spec(id).entry_point)
        taken = [p for p in inspect.signature(creator).parameters if p not in ("self", "render_mode")]
        unknown = [k for k in kwargs if k not in taken]
        what = f"env.{unknown[0]}: {id} has no such argument" if unknown else f"env={id}: {exc}"
        raise ValueError(f"{what}; it takes {', '.join(taken) or 'no arguments'}") from None


def env_id(env: Any) -> str:
    return env.spec.id


def describe_states(env: Any) -> str:
    from gymnasium.spaces import Box, Discrete

    space = env.observation_space
    if isinstance(space, Discrete):
        return f"{space.n} discrete states"
    if isinstance(space, Box):
        return f"continuous states ({' x '.join(map(str, space.shape))} numbers)"
    return f"{type(space).__name__} states"


def is_tabular(env: Any) -> bool:
    """Discrete states and actions: a Q-table fits."""
    from gymnasium.spaces import Discrete

    return isinstance(env.observation_space, Discrete) and isinstance(env.action_space, Discrete)


def has_model(env: Any) -> bool:
    """The transition table ``P[s][a] = [(p, s', r, terminated), ...]`` exact solvers read."""
    return isinstance(getattr(env.unwrapped, "P", None), dict)


def grid_shape(env: Any) -> tuple[int, int] | None:
    """Rows and columns of a grid world's states, else None (Taxi's states are not cells)."""
    if env_id(env) not in ARROWS:
        return None
    unwrapped = env.unwrapped
    if getattr(unwrapped, "desc", None) is not None:
        return tuple(unwrapped.desc.shape)  # type: ignore[return-value]
    return tuple(unwrapped.shape)  # type: ignore[return-value]


def start_distribution(env: Any) -> Any:
    """Probability of each start state (tabular environments publish it)."""
    return getattr(env.unwrapped, "initial_state_distrib", None)


def reached_goal(env: Any, reward: float, terminated: bool) -> bool | None:
    """Whether the episode that just ended reached the goal; None without a goal."""
    rule = GOAL.get(env_id(env))
    if rule is None:
        return None
    return bool(terminated) and (reward > 0 if rule == "reward" else True)
