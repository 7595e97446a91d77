from __future__ import annotations

import pytest
import torch
from torch import nn

from sweeplab.families.torch.optim import SparseAdam
from sweeplab.families.torch.schedules import inverse_sqrt, linear_warmup
from sweeplab.models.embedding_bag import BinnedEmbeddingBag


def _step(model: nn.Module, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    model(torch.randn(16, 5)).pow(2).mean().backward()
    opt.step()


def test_sparse_adam_updates_sparse_and_dense_parameters() -> None:
    model = BinnedEmbeddingBag((5,), 2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = SparseAdam(model.parameters(), lr=0.01)
    _step(model, opt)
    for name, p in model.named_parameters():
        assert not torch.equal(before[name], p), f"{name} did not move"
    kinds = sorted(type(o).__name__ for _, opts in opt._inner for o in opts)
    assert kinds == ["Adam", "SparseAdam"]


def test_sparse_adam_follows_scheduler_lr() -> None:
    model = BinnedEmbeddingBag((5,), 2)
    opt = SparseAdam(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.1)
    _step(model, opt)
    sched.step()
    _step(model, opt)
    assert all(o.param_groups[0]["lr"] == pytest.approx(0.001) for _, opts in opt._inner for o in opts)


def test_sparse_adam_refuses_dense_only_model() -> None:
    model = nn.Linear(5, 2)
    opt = SparseAdam(model.parameters())
    with pytest.raises(ValueError, match="optimizer=sparse_adam: this model's parameters all get dense gradients"):
        _step(model, opt)


def test_sparse_adam_state_round_trip() -> None:
    model = BinnedEmbeddingBag((5,), 2)
    opt = SparseAdam(model.parameters(), lr=0.01)
    _step(model, opt)
    state = opt.state_dict()
    fresh = SparseAdam(model.parameters(), lr=0.01)
    fresh.load_state_dict(state)
    _step(model, fresh)
    adam_state = [o for _, opts in fresh._inner for o in opts if isinstance(o, torch.optim.Adam)][0].state
    assert all(int(s["step"]) == 2 for s in adam_state.values())


def test_warmup_factors() -> None:
    assert [round(linear_warmup(e, 3), 2) for e in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert inverse_sqrt(0, 2) < inverse_sqrt(1, 2) and inverse_sqrt(10, 2) < 1
