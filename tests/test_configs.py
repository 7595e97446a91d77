"""Every option of every config group composes and trains one short epoch."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from conftest import FAST, store_overrides, train_in_process
from sweeplab.config import compose, register_experiments

# Partners an option needs to make sense (the option itself is the subject).
NEEDS = {
    ("optimizer", "sparse_adam"): ["model=embedding_bag"],
    ("model", "embedding_bag"): ["optimizer=sparse_adam"],
    ("model", "linear_regression"): ["data=diabetes"],
    ("loss", "bce"): ["data=breast_cancer"],
    ("loss", "mse"): ["data=diabetes"],
    ("loss", "mae"): ["data=diabetes"],
    ("loss", "huber"): ["data=diabetes"],
}
NOT_ON_THIS_MACHINE = {("trainer", "gpu"), ("trainer", "mps"), ("trainer", "ddp")}  # tested elsewhere


def options(group: str) -> list[str]:
    folder = resources.files("sweeplab.conf") / group
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


CASES = [
    (group, option)
    for group in ("data", "model", "optimizer", "scheduler", "loss", "trainer", "logger", "callbacks")
    for option in options(group)
]


def test_every_group_has_its_options() -> None:
    assert len(options("optimizer")) == 11  # the seed's ten + AdamW
    assert {"none", "step", "multistep", "exponential", "cosine", "lambda", "plateau"} <= set(options("scheduler"))
    assert {"linear", "mlp", "cnn", "deep_mlp", "embedding_bag"} <= set(options("model"))
    assert {"digits", "iris", "wine", "breast_cancer", "diabetes", "moons"} <= set(options("data"))


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_trains_one_epoch(group: str, option: str, store, tmp_path: Path) -> None:
    overrides = [f"{group}={option}", *NEEDS.get((group, option), [])]
    if (group, option) == ("data", "csv"):
        table = tmp_path / "table.csv"
        table.write_text("a,b,kind,y\n" + "".join(f"{i % 7},{i % 5},{'x' if i % 2 else 'z'},{i % 3}\n" for i in range(60)))
        overrides += [f"data.path={table}", "data.target=y"]
    if group not in ("callbacks", "optimizer", "scheduler"):
        overrides += ["callbacks=none"]  # optimizers and schedulers keep checkpointing: their state must reload
    cfg = compose(overrides, run_dir=tmp_path / "run")
    assert cfg.get(group) is not None
    if (group, option) in NOT_ON_THIS_MACHINE:
        assert cfg.trainer.accelerator in ("gpu", "mps", "auto")
        return
    if group != "logger":
        overrides += ["logger=none"]
    metrics = train_in_process([*overrides, "trainer.max_epochs=1", *store_overrides(store)], tmp_path / "run")
    assert any(k.startswith("test/") for k in metrics)
    if group in ("optimizer", "scheduler"):  # the test stage reloaded the best checkpoint safely
        assert (tmp_path / "run" / "checkpoints" / "best.ckpt").exists()
    assert all(v == v for v in metrics.values()), metrics  # no NaN


@pytest.mark.parametrize("name", register_experiments())
def test_experiment_presets_compose(name: str, tmp_path: Path) -> None:
    cfg = compose([f"experiment={name}"], run_dir=tmp_path)
    assert cfg.experiment_name != "sweeplab"
    assert cfg.trainer.max_epochs >= 1


def test_scheduler_configs_carry_interval_and_monitor() -> None:
    plateau = compose(["scheduler=plateau"]).scheduler
    assert plateau.monitor == "val/loss" and plateau.interval == "epoch"
    cosine = compose(["scheduler=cosine", "trainer.max_epochs=7"]).scheduler
    assert cosine.T_max == 7


def test_user_config_folder_joins_search_path(tmp_path: Path) -> None:
    (tmp_path / "optimizer").mkdir()
    (tmp_path / "optimizer" / "my_sgd.yaml").write_text("_target_: torch.optim.SGD\n_partial_: true\nlr: 0.123\n")
    cfg = compose([f"hydra.searchpath=[file://{tmp_path}]", "optimizer=my_sgd"])
    assert cfg.optimizer.lr == 0.123
