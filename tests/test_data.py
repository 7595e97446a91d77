from __future__ import annotations

import numpy as np
import pytest

from sweeplab.data.base import Task
from sweeplab.data.sklearn_data import (
    BreastCancerDataModule,
    DiabetesDataModule,
    DigitsDataModule,
    IrisDataModule,
    MoonsDataModule,
    WineDataModule,
)


@pytest.mark.parametrize(
    "cls,task,shape,classes",
    [
        (DigitsDataModule, Task.MULTICLASS, (1, 8, 8), 10),
        (IrisDataModule, Task.MULTICLASS, (4,), 3),
        (WineDataModule, Task.MULTICLASS, (13,), 3),
        (BreastCancerDataModule, Task.BINARY, (30,), 2),
        (DiabetesDataModule, Task.REGRESSION, (10,), None),
        (MoonsDataModule, Task.BINARY, (2,), 2),
    ],
)
def test_declares_task_shape_and_classes(cls, task, shape, classes) -> None:
    dm = cls()
    assert dm.task is task
    assert dm.input_shape == shape
    assert dm.num_classes == classes
    assert dm.num_outputs == (classes if task is Task.MULTICLASS else 1)


def test_split_is_stratified_seeded_and_disjoint() -> None:
    a, b = DigitsDataModule(seed=7), DigitsDataModule(seed=7)
    a.setup(), b.setup()
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(a.arrays(split)[0], b.arrays(split)[0])
    sizes = {s: len(a.arrays(s)[1]) for s in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797
    assert sizes["test"] == pytest.approx(0.15 * 1797, abs=2)
    # stratified: every class keeps its share in the test split
    test_counts = np.bincount(a.arrays("test")[1], minlength=10)
    assert test_counts.min() >= 25
    c = DigitsDataModule(seed=8)
    assert not np.array_equal(a.arrays("test")[0], c.arrays("test")[0])


def test_standardised_with_train_statistics_only() -> None:
    dm = WineDataModule()
    x_train, x_test = dm.arrays("train")[0], dm.arrays("test")[0]
    np.testing.assert_allclose(x_train.mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(x_train.std(axis=0), 1, atol=1e-4)
    assert np.abs(x_test.mean(axis=0)).max() > 1e-3  # test was not fitted on


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"batch_size": 0}, "data.batch_size=0"),
        ({"batch_size": -4}, "data.batch_size=-4"),
        ({"val_fraction": 1.2}, "data.val_fraction=1.2"),
        ({"val_fraction": 0.5, "test_fraction": 0.45}, "must leave at least 10%"),
    ],
)
def test_bad_arguments_name_the_value(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        IrisDataModule(**kwargs)


def test_loader_batches_cover_split_once() -> None:
    dm = IrisDataModule(batch_size=16)
    seen = sum(len(y) for _, y in dm.train_dataloader())
    assert seen == len(dm.arrays("train")[1])


def test_a_batch_holds_the_rows_its_sampler_drew() -> None:
    """Batches are gathered in one step from the sampler's positions: each row with its own target, in order."""
    import torch

    dm = DigitsDataModule(batch_size=64)
    x, y = (torch.as_tensor(a) for a in dm.arrays("train"))
    dataset = dm.train_dataloader().dataset
    positions = [5, 3, 700, 0, 5, len(y) - 1]
    bx, by = dataset.__getitems__(positions)
    assert torch.equal(bx, x[positions]) and torch.equal(by, y[positions].long())
    val_x, val_y = (torch.as_tensor(a) for a in dm.arrays("val"))
    batches = list(dm.val_dataloader())  # sequential: the split in order
    assert torch.equal(torch.cat([b[0] for b in batches]), val_x) and torch.equal(torch.cat([b[1] for b in batches]), val_y.long())


def test_a_bundled_data_set_is_read_once_a_process_and_each_caller_gets_its_own_arrays(monkeypatch) -> None:
    from sklearn import datasets

    from sweeplab.data import sklearn_data

    sklearn_data._read.cache_clear()
    reads: list[int] = []
    load = datasets.load_digits
    monkeypatch.setattr(datasets, "load_digits", lambda: reads.append(1) or load())
    first, second = (DigitsDataModule(seed=1) for _ in range(2))
    x1, y1 = first.load_arrays()
    x1[:] = -1.0  # one trial's data changed in place leaves the next trial's alone
    x2, y2 = second.load_arrays()
    assert len(reads) == 1
    assert np.array_equal(x2, load().data) and np.array_equal(y2, load().target)
    sklearn_data._read.cache_clear()
