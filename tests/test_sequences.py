"""Series data (chronological windows, train-only scaling), RNN/LSTM/GRU, and the AutoEncoder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sweeplab.data.series import SeriesDataModule, SineDataModule, SunspotsDataModule
from sweeplab.models.autoencoder import AutoEncoder
from sweeplab.models.recurrent import RecurrentNet

from conftest import FAST, runs_of, saved_predictions, store_overrides, train_in_process


class Ramp(SeriesDataModule):
    """0, 1, 2, ... so every value tells where in time it came from."""

    def load_series(self) -> np.ndarray:
        return np.arange(100, dtype=float)


def test_series_windows_are_chronological_with_train_only_scaling() -> None:
    dm = Ramp(window=5, horizon=3, val_fraction=0.2, test_fraction=0.2, batch_size=8)
    dm.setup()
    mean, std = dm.target_scale_
    unscale = lambda a: np.asarray(a) * std + mean  # noqa: E731
    x = {s: unscale(dm.arrays(s)[0]) for s in ("train", "val", "test")}
    y = {s: unscale(dm.arrays(s)[1]) for s in ("train", "val", "test")}
    assert x["train"].shape[1:] == (5, 1) and dm.input_shape == (5, 1)
    # Target = the value `horizon` steps after the window's last value.
    for s in x:
        np.testing.assert_allclose(y[s], x[s][:, -1, 0] + 3, atol=1e-3)
    # No shuffling across time: every train target precedes every val target, and so on.
    assert y["train"].max() < y["val"].min() and y["val"].max() < y["test"].min()
    assert [len(y[s]) for s in ("train", "val", "test")] == [55, 19, 19]  # 93 windows; 20% each rounded
    # Scaling saw only what training samples contain (values 0..train's last target).
    last_train_value = int(round(y["train"].max()))
    assert mean == pytest.approx(np.arange(last_train_value + 1).mean())


def test_series_loaders_are_ordered_for_evaluation() -> None:
    dm = Ramp(window=4, batch_size=7)
    dm.setup()
    targets = torch.cat([y for _, y in dm.test_dataloader()])
    assert torch.all(targets[1:] > targets[:-1])


def test_sunspots_and_sine_come_without_a_download() -> None:
    sun = SunspotsDataModule(window=16)
    assert len(sun.load_series()) == 309
    sun.setup()
    assert sun.input_shape == (16, 1)
    a, b = SineDataModule(n_points=300, noise=0.0, seed=1), SineDataModule(n_points=300, noise=0.3, seed=1)
    assert np.allclose(a.load_series()[[0, 25]], [0.0, np.sin(np.pi)], atol=1e-9)  # period 50
    assert np.std(b.load_series() - a.load_series()) == pytest.approx(0.3, rel=0.2)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"window": 0}, "data.window=0: must be a positive integer"),
        ({"horizon": 1.5}, "data.horizon=1.5"),
        ({"window": 300}, "too few for a train/val/test split"),
        ({"n_points": 5}, "data.n_points=5"),
        ({"noise": -1.0}, "data.noise=-1.0"),
    ],
)
def test_series_errors_name_the_bad_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        SineDataModule(**{"n_points": 200, **kwargs}).setup()


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_recurrent_nets_read_sequences_rows_and_flat_series(cell: str, bidirectional: bool) -> None:
    for shape, outputs in (((16, 1), 1), ((1, 8, 8), 10), ((12,), 3)):
        net = RecurrentNet(shape, outputs, cell=cell, hidden_size=6, num_layers=2, bidirectional=bidirectional, dropout=0.2)
        assert net(torch.randn(4, *shape)).shape == (4, outputs)
    assert isinstance(net.rnn, {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell])
    assert net.rnn.bidirectional is bidirectional and net.rnn.num_layers == 2


def test_recurrent_output_depends_on_order_and_uses_the_last_step() -> None:
    torch.manual_seed(0)
    net = RecurrentNet((10, 1), 1, cell="lstm", hidden_size=8).eval()
    x = torch.randn(1, 10, 1)
    assert not torch.allclose(net(x), net(x.flip(1)))
    # Digits read row by row: permuting pixels within a row changes the step's input, not the step count.
    image = torch.randn(2, 1, 8, 8)
    rows = RecurrentNet((1, 8, 8), 10, cell="gru", hidden_size=8).eval()
    assert rows(image).shape == (2, 10)


def test_recurrent_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="model.cell='tcn': choose one of rnn, lstm, gru"):
        RecurrentNet((16, 1), 1, cell="tcn")
    with pytest.raises(ValueError, match="model.hidden_size=0"):
        RecurrentNet((16, 1), 1, hidden_size=0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "metric"),
    [
        (["model=rnn", "data=sunspots"], "test/mse"),
        (["model=lstm", "data=sine", "data.n_points=400"], "test/r2"),
        (["model=gru", "data=sunspots", "model.bidirectional=true"], "test/mae"),
        (["model=lstm", "data=digits"], "test/f1"),  # sequence classification, row by row
    ],
    ids=["rnn-sunspots", "lstm-sine", "bigru-sunspots", "lstm-digits-rows"],
)
def test_sequence_models_train_and_land_in_mlflow(overrides: list[str], metric: str, tmp_path: Path, store) -> None:
    metrics = train_in_process([*overrides, *FAST, *store_overrides(store)], tmp_path / "run")
    run = runs_of(store["uri"]).iloc[0]
    assert run["status"] == "FINISHED"
    assert run[f"metrics.{metric}"] == pytest.approx(metrics[metric])
    y_true, y_pred = saved_predictions(tmp_path / "run")
    if metric != "test/f1":  # regression: the logged mse is the mse of the saved predictions
        from sklearn.metrics import mean_squared_error

        assert metrics["test/mse"] == pytest.approx(mean_squared_error(y_true, y_pred), rel=1e-4)
        assert (tmp_path / "run" / "forecast.png").stat().st_size > 5000  # forecasts over time, beside the scatter
    else:
        assert not (tmp_path / "run" / "forecast.png").exists()


def test_autoencoder_shapes_and_latent_size() -> None:
    net = AutoEncoder((1, 8, 8), latent_size=5, hidden_sizes=[32])
    x = torch.randn(3, 1, 8, 8)
    assert net(x).shape == x.shape and net.encode(x).shape == (3, 5)
    with pytest.raises(ValueError, match="model.latent_size=0"):
        AutoEncoder((64,), latent_size=0)


def test_reconstruction_pictures_are_drawn_in_pixel_units() -> None:
    from sweeplab.data.sklearn_data import DigitsDataModule

    dm = DigitsDataModule()
    dm.setup()
    x = dm.arrays("test")[0]
    raw = dm.unstandardize(x)
    assert raw.shape == x.shape and abs(float(x.mean())) < 0.1  # standardised for the model...
    np.testing.assert_allclose(raw, np.round(raw), atol=1e-4)  # ...integer grey levels 0..16 for the picture
    assert raw.min() > -1e-4 and raw.max() < 16 + 1e-4 and raw.max() > 15


@pytest.mark.slow
def test_autoencoder_trains_on_digits_and_logs_reconstructions(tmp_path: Path, store) -> None:
    from mlflow.tracking import MlflowClient

    metrics = train_in_process(
        ["model=autoencoder", "model.latent_size=8", "trainer.max_epochs=3", "callbacks=none", *store_overrides(store)], tmp_path / "run"
    )
    run = runs_of(store["uri"]).iloc[0]
    assert run["status"] == "FINISHED" and run["tags.sweeplab.task"] == "reconstruction"
    for stage in ("train", "val", "test"):
        assert f"metrics.{stage}/mse" in run and np.isfinite(run[f"metrics.{stage}/mse"])
    assert "metrics.test/accuracy" not in run or np.isnan(run["metrics.test/accuracy"])
    # The logged test mse is the mean of the saved per-sample errors (equal-size samples).
    errors = np.loadtxt(tmp_path / "run" / "reconstruction_errors.csv", skiprows=1)
    assert len(errors) == 270 and metrics["test/mse"] == pytest.approx(errors.mean(), rel=1e-4)
    artifacts = {a.path for a in MlflowClient(store["uri"]).list_artifacts(run["run_id"])}
    assert {"reconstructions.png", "reconstruction_errors.csv", "config.yaml"} <= artifacts
    assert run["params.model.latent_size"] == "8"


def test_autoencoder_refuses_a_classification_loss(tmp_path: Path, store) -> None:
    with pytest.raises(ValueError, match="loss=CrossEntropyLoss does not fit the run's reconstruction task"):
        train_in_process(["model=autoencoder", "loss=cross_entropy", *FAST, *store_overrides(store)], tmp_path / "run")
    assert runs_of(store["uri"]).empty or (runs_of(store["uri"])["status"] != "RUNNING").all()
