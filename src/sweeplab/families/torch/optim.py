"""Optimizers torch does not ship in the form a config needs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


class SparseAdam(torch.optim.Optimizer):
    """``torch.optim.SparseAdam`` for sparse gradients and ``torch.optim.Adam`` for dense ones.

    torch's SparseAdam refuses dense gradients, and a model with an
    ``nn.EmbeddingBag(sparse=True)`` still has dense layers. Lightning drives
    one optimizer per module, so this wrapper owns the parameter groups (which
    schedulers adjust) and routes each parameter, by the kind of gradient it
    gets on the first step, to one of the two inner optimizers.
    """

    def __init__(self, params: Any, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        if lr <= 0:
            raise ValueError(f"optimizer.lr={lr}: must be > 0")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})
        self._inner: list[tuple[dict, list[torch.optim.Optimizer]]] | None = None
        self._pending_inner_state: list[list[dict]] | None = None

    def _build_inner(self) -> None:
        inner = []
        n_sparse = 0
        for group in self.param_groups:
            hp = {k: group[k] for k in ("lr", "betas", "eps")}
            sparse = [p for p in group["params"] if p.grad is not None and p.grad.is_sparse]
            dense = [p for p in group["params"] if not (p.grad is not None and p.grad.is_sparse)]
            n_sparse += len(sparse)
            opts: list[torch.optim.Optimizer] = []
            if sparse:
                opts.append(torch.optim.SparseAdam(sparse, **hp))
            if dense:
                opts.append(torch.optim.Adam(dense, **hp))
            inner.append((group, opts))
        if n_sparse == 0:
            raise ValueError(
                "optimizer=sparse_adam: this model's parameters all get dense gradients; SparseAdam "
                "needs sparse ones (use model=embedding_bag, or another optimizer such as adam)"
            )
        self._inner = inner
        if self._pending_inner_state is not None:
            for (_, opts), states in zip(inner, self._pending_inner_state):
                for opt, state in zip(opts, states):
                    opt.load_state_dict(state)
            self._pending_inner_state = None

    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if self._inner is None:
            self._build_inner()
        for group, opts in self._inner:  # type: ignore[union-attr]
            for opt in opts:
                # Schedulers change the outer group's lr; pass it on.
                opt.param_groups[0].update(lr=group["lr"], betas=group["betas"], eps=group["eps"])
                opt.step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["inner"] = [[o.state_dict() for o in opts] for _, opts in (self._inner or [])]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        inner = state_dict.pop("inner", [])
        super().load_state_dict(state_dict)
        self._pending_inner_state = inner or None
        self._inner = None
