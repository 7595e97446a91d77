"""The seed's four model-definition styles, losses and per-parameter options."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sweeplab.data.base import Task
from sweeplab.families.torch.module import SweepModule, resolve_loss
from sweeplab.models.builder import build_deep_mlp
from sweeplab.models.cnn import SmallCNN
from sweeplab.models.embedding_bag import BinnedEmbeddingBag
from sweeplab.models.linear import build_linear
from sweeplab.models.mlp import build_mlp


def test_linear_is_a_single_layer() -> None:
    net = build_linear((4,), 3)
    layers_with_weights = [m for m in net.modules() if any(p is not None for p in m.parameters(recurse=False))]
    assert len(layers_with_weights) == 1 and isinstance(layers_with_weights[0], nn.Linear)
    assert net(torch.randn(5, 4)).shape == (5, 3)


def test_mlp_is_sequential_from_config() -> None:
    net = build_mlp((1, 8, 8), 10, hidden_sizes=[32, 16], activation="tanh", dropout=0.2)
    assert isinstance(net, nn.Sequential)
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [32, 16, 10]
    assert any(isinstance(m, nn.Tanh) for m in net) and any(isinstance(m, nn.Dropout) for m in net)
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_cnn_is_a_module_subclass_with_forward() -> None:
    net = SmallCNN((1, 8, 8), 10)
    assert type(net).forward is not nn.Module.forward
    assert net(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert SmallCNN((3, 32, 32), 4)(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_cnn_without_batch_norm_keeps_its_other_layers_and_their_names() -> None:
    """``+model.batch_norm=false`` (so the fused launcher can vectorise it) leaves only BatchNorm
    out; the default keeps the layer names earlier runs' checkpoints hold."""
    torch.manual_seed(0)
    with_bn, without = SmallCNN((1, 8, 8), 10), SmallCNN((1, 8, 8), 10, batch_norm=False)
    assert [type(m) for m in with_bn.features if not isinstance(m, nn.BatchNorm2d)] == [type(m) for m in without.features]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in without.modules())
    assert list(with_bn.state_dict())[:6] == [
        "features.0.weight",
        "features.0.bias",
        "features.1.weight",
        "features.1.bias",
        "features.1.running_mean",
        "features.1.running_var",
    ]
    assert without(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_cnn_refuses_flat_data() -> None:
    with pytest.raises(ValueError, match=r"model=cnn needs image-shaped samples.*\(30,\)"):
        SmallCNN((30,), 2)


def test_builder_function_reuses_one_block_shape() -> None:
    net = build_deep_mlp((10,), 1, width=8, depth=3)
    assert [m.out_features for m in net if isinstance(m, nn.Linear)] == [8, 8, 8, 1]
    assert net(torch.randn(4, 10)).shape == (4, 1)


def test_unknown_activation_lists_choices() -> None:
    with pytest.raises(ValueError, match="model.activation='swishy'.*relu"):
        build_mlp((4,), 2, activation="swishy")


def test_embedding_bag_gets_sparse_gradients() -> None:
    net = BinnedEmbeddingBag((6,), 2)
    net(torch.randn(8, 6)).sum().backward()
    assert net.embedding.weight.grad.is_sparse
    assert not net.head[1].weight.grad.is_sparse


@pytest.mark.parametrize(
    "loss,task,ok",
    [
        (nn.CrossEntropyLoss(), Task.MULTICLASS, True),
        (nn.BCEWithLogitsLoss(), Task.BINARY, True),
        (nn.MSELoss(), Task.REGRESSION, True),
        (nn.MSELoss(), Task.MULTICLASS, False),
        (nn.CrossEntropyLoss(), Task.REGRESSION, False),
        (nn.BCEWithLogitsLoss(), Task.MULTICLASS, False),
    ],
)
def test_loss_must_fit_task(loss, task, ok) -> None:
    if ok:
        assert resolve_loss(loss, task) is loss
    else:
        with pytest.raises(ValueError, match=f"does not fit the run's {task.value} task"):
            resolve_loss(loss, task)


def test_task_default_losses() -> None:
    assert isinstance(resolve_loss(None, Task.BINARY), nn.BCEWithLogitsLoss)
    assert isinstance(resolve_loss(None, Task.MULTICLASS), nn.CrossEntropyLoss)
    assert isinstance(resolve_loss(None, Task.REGRESSION), nn.MSELoss)


def test_bce_loss_on_probabilities_matches_logits_form() -> None:
    logits, y = torch.randn(16, 1), torch.randint(0, 2, (16,))
    with_logits = SweepModule(build_linear((2,), 1), Task.BINARY, torch.optim.SGD, nn.BCEWithLogitsLoss())
    plain = SweepModule(build_linear((2,), 1), Task.BINARY, torch.optim.SGD, nn.BCELoss())
    assert plain.compute_loss(logits, y).item() == pytest.approx(with_logits.compute_loss(logits, y).item(), rel=1e-5)


def test_param_groups_give_per_parameter_learning_rates() -> None:
    from functools import partial

    net = build_mlp((4,), 3, hidden_sizes=[8])
    module = SweepModule(
        net, Task.MULTICLASS, partial(torch.optim.SGD, lr=0.1), num_classes=3, param_groups=[{"params": r"^3\.", "lr": 0.001}]
    )
    optimizer = module.configure_optimizers()
    lrs = sorted(g["lr"] for g in optimizer.param_groups)
    assert lrs == [0.001, 0.1]
    head = next(g for g in optimizer.param_groups if g["lr"] == 0.001)
    assert {id(p) for p in head["params"]} == {id(p) for p in net[3].parameters()}


def test_param_group_pattern_matching_nothing_is_an_error() -> None:
    module = SweepModule(
        build_linear((4,), 2), Task.MULTICLASS, torch.optim.SGD, num_classes=2, param_groups=[{"params": "backbone", "lr": 1}]
    )
    with pytest.raises(ValueError, match="params='backbone' matches no trainable parameter"):
        module.configure_optimizers()


def test_sparse_model_with_dense_only_optimizer_is_refused() -> None:
    module = SweepModule(BinnedEmbeddingBag((4,), 3), Task.MULTICLASS, torch.optim.Adam, num_classes=3)
    with pytest.raises(ValueError, match="which Adam cannot take: use optimizer=sparse_adam"):
        module.configure_optimizers()
