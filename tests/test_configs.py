"""Every option of every config group composes and trains one short epoch."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from sweeplab.config import check_config, compose, register_experiments
from sweeplab.models.zoo import ARCHITECTURES

from conftest import runs_of, store_overrides, train_in_process

# Partners an option needs to make sense (the option itself is the subject).
NEEDS = {
    ("optimizer", "sparse_adam"): ["model=embedding_bag"],
    ("model", "embedding_bag"): ["optimizer=sparse_adam"],
    ("model", "linear_regression"): ["data=diabetes"],
    ("loss", "bce"): ["data=breast_cancer"],
    ("loss", "mse"): ["data=diabetes"],
    ("loss", "mae"): ["data=diabetes"],
    ("loss", "huber"): ["data=diabetes"],
    # Text: classifiers on the movie-review sentences, word vectors on the corpus (a few batches of its cells).
    ("data", "sentiment"): ["model=embedding_bag"],
    ("data", "text_csv"): ["model=embedding_bag"],
    ("data", "text_folder"): ["model=embedding_bag", "data.tokenizer=bpe", "data.vocab_size=100"],
    ("data", "corpus"): [
        "model=glove",
        "optimizer=adagrad",
        "+trainer.limit_train_batches=5",
        "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2",
    ],
    ("model", "glove"): [
        "data=corpus",
        "optimizer=adagrad",
        "+trainer.limit_train_batches=5",
        "+trainer.limit_val_batches=2",
        "+trainer.limit_test_batches=2",
    ],
    ("model", "word2vec"): ["data=corpus", "model.epochs=1"],
    ("model", "bert"): ["data=sentiment", "data.tokenizer=wordpiece", "model.hidden_size=32", "model.num_layers=1"],
    ("model", "tfidf_logistic_regression"): ["data=sentiment"],
}
SHORT_EPOCH = ["+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1"]
for big in ("alexnet", "resnet18", "resnet50", "vgg11", "mobilenet_v2"):  # a full epoch of VGG-11 takes ~30 s on 2 cores
    NEEDS[("model", big)] = SHORT_EPOCH
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
    assert {"alexnet", "resnet18", "resnet50", "vgg11", "mobilenet_v2", "rnn", "lstm", "gru", "autoencoder"} <= set(options("model"))
    assert {"digits", "iris", "wine", "breast_cancer", "diabetes", "moons"} <= set(options("data"))
    assert {"csv", "image_folder", "mnist", "fashion_mnist", "cifar10", "sunspots", "sine"} <= set(options("data"))
    assert {"sentiment", "text_csv", "text_folder", "corpus"} <= set(options("data"))
    assert {"word2vec", "glove", "bert", "tfidf_logistic_regression"} <= set(options("model"))


def generated_files(option: str, tmp_path: Path, monkeypatch) -> list[str]:
    """Overrides pointing a data option that reads files at generated ones."""
    from test_images import make_cifar10, make_image_folder, make_mnist

    if option == "csv":
        table = tmp_path / "table.csv"
        table.write_text("a,b,kind,y\n" + "".join(f"{i % 7},{i % 5},{'x' if i % 2 else 'z'},{i % 3}\n" for i in range(60)))
        return [f"data.path={table}", "data.target=y"]
    if option in ("text_csv", "text_folder"):
        from test_text import write_folder, write_reviews

        if option == "text_csv":
            return [f"data.path={write_reviews(tmp_path / 'reviews.csv')}", "data.text=review", "data.target=label"]
        return [f"data.root={write_folder(tmp_path / 'reviews')}"]
    if option == "image_folder":
        return [f"data.root={make_image_folder(tmp_path / 'images')}"]
    if option in ("mnist", "fashion_mnist"):
        folder = "MNIST" if option == "mnist" else "FashionMNIST"
        return [f"data.root={make_mnist(tmp_path / 'tv', folder)}", "data.val_fraction=0.2"]
    if option == "cifar10":
        import torchvision.datasets.cifar as cifar

        monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: Path(path).exists())
        return [f"data.root={make_cifar10(tmp_path / 'tv')}", "data.val_fraction=0.2"]
    return []


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_option_composes_and_trains_one_epoch(group: str, option: str, store, tmp_path: Path, monkeypatch) -> None:
    overrides = [f"{group}={option}", *NEEDS.get((group, option), [])]
    if group == "data":
        overrides += generated_files(option, tmp_path, monkeypatch)
    if group not in ("callbacks", "optimizer", "scheduler"):
        overrides += ["callbacks=none"]  # optimizers and schedulers keep checkpointing: their state must reload
    cfg = compose(overrides, run_dir=tmp_path / "run")
    assert cfg.get(group) is not None
    if (group, option) in NOT_ON_THIS_MACHINE:
        assert cfg.trainer.accelerator in ("gpu", "mps", "auto")
        return
    if group not in ("logger", "data"):
        overrides += ["logger=none"]
    if (group, option) == ("logger", "wandb"):  # no account here: W&B's own offline mode
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    if group == "model" and option in ARCHITECTURES:
        # test_zoo trains each into MLflow from the same option and checks its metrics against scikit-learn.
        check_config(cfg)
        return
    metrics = train_in_process([*overrides, "trainer.max_epochs=1", *store_overrides(store)], tmp_path / "run")
    assert any(k.startswith("test/") for k in metrics)
    if group == "data":  # every data set's metrics land in MLflow
        run = runs_of(store["uri"]).iloc[0]
        assert run["status"] == "FINISHED"
        assert {f"metrics.{k}" for k in metrics if k.startswith("test/")} <= set(run.dropna().index)
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
