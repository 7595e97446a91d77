"""Composing a sweep's jobs once per shape, not once per job.

Hydra composes each job of a sweep from scratch: it reads the defaults list, loads and
merges every config file, then applies the job's overrides (0.15-0.2 s a job here, in turn,
before any job starts: 8 s for a 48-run grid). The jobs of a grid differ mostly in values
(``optimizer.lr=0.003``, ``seed=2``), which change no config file the composition reads.
So the first job of each shape (the same config-group choices and Hydra overrides, the same
keys given values) is composed by Hydra; each later job of that shape is a copy of it with
its own values applied by Hydra's own code, and its ``hydra.overrides`` and
``hydra.job.override_dirname`` written as Hydra writes them. Anything else (a config group
chosen, ``+key``, ``~key``, a dict value, a key given twice) is composed by Hydra, as before.
``tests/test_fused_compose.py`` checks the two give the same config, key for key.
"""

import copy
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict


def _overlap(keys: list[str]) -> bool:
    """Whether one key is another, or inside it (``model`` and ``model.width``)."""
    ordered = sorted(keys)
    return any(b == a or b.startswith(a + ".") for a, b in zip(ordered, ordered[1:]))


def shape_composer(loader: Any) -> Any:
    """``loader.load_sweep_config``, composing each shape of job once (see the module's text)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    compose = loader.load_sweep_config
    parser = OverridesParser.create()
    shapes: dict[tuple, DictConfig] = {}  # a shape's first job, as Hydra composed it
    is_group: dict[str, bool] = {}

    def group(key: str) -> bool:
        if key not in is_group:
            is_group[key] = loader.repository.group_exists(key)
        return is_group[key]

    def on_config(override: Any) -> bool:
        """What Hydra applies to the composed config (as it tells them apart), not to its defaults list."""
        return not override.is_hydra_override() and (isinstance(override.value(), dict) or not group(override.key_or_group))

    def only_a_value(override: Any) -> bool:
        """What sets a value and nothing more: no config file the composition reads depends on it."""
        plain = override.type == OverrideType.CHANGE and override.package is None and not override.is_sweep_override()
        return plain and not isinstance(override.value(), dict) and on_config(override)

    def load_sweep_config(master: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        lines = [*OmegaConf.to_container(master.hydra.overrides.hydra), *sweep_overrides]
        parsed = parser.parse_overrides(overrides=lines)
        if _overlap([o.key_or_group for o in parsed if on_config(o)]):  # the order they apply in would matter
            return compose(master, sweep_overrides)
        values = [o for o in parsed if only_a_value(o)]
        by_value = {id(o) for o in values}
        shape = (
            master.hydra.job.config_name,
            tuple(o.input_line for o in parsed if id(o) not in by_value),
            tuple(o.key_or_group for o in values),
        )
        first = shapes.get(shape)
        if first is None:
            cfg = compose(master, sweep_overrides)
            shapes[shape] = copy.deepcopy(cfg)
            return cfg
        cfg = copy.deepcopy(first)
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        task = [o for o in parsed if not o.is_hydra_override()]
        cfg.hydra.overrides.hydra = [o.input_line for o in parsed if o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in task]
        dirname = cfg.hydra.job.config.override_dirname
        with open_dict(cfg.hydra):
            cfg.hydra.job.override_dirname = get_overrides_dirname(
                overrides=task, kv_sep=dirname.kv_sep, item_sep=dirname.item_sep, exclude_keys=dirname.exclude_keys
            )
        OmegaConf.copy_cache(from_config=master, to_config=cfg)
        return cfg

    return load_sweep_config
