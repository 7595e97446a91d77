"""A fused group's trials as one tensor a layer, and one optimizer step for all of them.

While a group trains, the parameters of one layer of its k trials are one leaf tensor
``[k, *shape]``: the vmapped forward takes it as it is (no stacking at every step) and the
backward leaves one gradient a layer. Each trial's own parameters are views of its row, so
its module, its optimizer's ``param_groups`` and its scheduler are those of its solo run.

Trials whose optimizers are SGD, Adam or AdamW (one parameter group holding every trainable
parameter; no amsgrad, maximize, differentiable or fused kernels) step together: one update
a layer for all of them, with each trial's hyper-parameters as a vector over rows, read from
its ``param_groups`` at every step (a scheduler's change takes effect as in a solo run). The
arithmetic is torch's single-tensor update, row by row. Their state (moments, momentum
buffers, step counts) is kept stacked and handed back to each trial's optimizer, in torch's
own layout, for every checkpoint and when the trial leaves; so a trial resumed alone goes on
from it. Any other optimizer steps each trial on its own, on views of its rows and gradients.

A trial's row is shared storage: whatever saves a trial while it is stacked saves clones
(``own_state_dict``), and ``release`` makes each trial's tensors its own again.
"""

from __future__ import annotations

import math
from typing import Any

import torch

_KINDS = (torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def _scalar_dtype() -> torch.dtype:
    """The dtype torch's optimizers keep ``state['step']`` in."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _rows(vector: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A per-row vector shaped to broadcast over ``like`` ([rows, *shape])."""
    return vector.view(-1, *([1] * (like.dim() - 1)))


def stack_key(optimizer: torch.optim.Optimizer, trainable: list[torch.Tensor]) -> tuple | None:
    """Which stacked update steps this optimizer's trial (trials with equal keys step together);
    None: its optimizer steps on its own."""
    if type(optimizer) not in _KINDS or len(optimizer.param_groups) != 1:
        return None
    group = optimizer.param_groups[0]
    if {id(p) for p in group["params"] if p.requires_grad} != {id(p) for p in trainable}:
        return None
    if group.get("maximize") or group.get("differentiable") or group.get("fused") or group.get("capturable"):
        return None
    if any(torch.is_tensor(group[k]) for k in ("lr", "weight_decay")):
        return None
    if isinstance(optimizer, torch.optim.SGD):
        return ("sgd", bool(group["nesterov"]), group["momentum"] != 0)
    if group["amsgrad"] or any(torch.is_tensor(b) for b in group["betas"]):
        return None
    return ("adam", bool(group["decoupled_weight_decay"]))


class _Update:
    """One optimizer kind's step for the rows ``start:stop`` of a stack."""

    def __init__(self, key: tuple, trials: list[Any], start: int, layers: dict[str, torch.Tensor]) -> None:
        self.key, self.trials, self.slice = key, trials, slice(start, start + len(trials))
        device = next(iter(layers.values())).device
        self.kind = key[0]
        self._hyper: tuple | None = None  # the hyper-parameters last read, and their vectors
        self.vectors: dict[str, torch.Tensor] = {}
        self.any_decay = False
        self._stepped = False
        params = [[t.params[name] for name in layers] for t in trials]
        if self.kind == "adam":
            self.steps = torch.tensor(
                [float(t.optimizer.state.get(p[0], {}).get("step", 0.0)) for t, p in zip(trials, params)],
                dtype=torch.float64,
                device=device,
            )
            self.moments = {
                which: {
                    name: torch.stack([self._state(t, row[i], which) for t, row in zip(trials, params)]) for i, name in enumerate(layers)
                }
                for which in ("exp_avg", "exp_avg_sq")
            }
        elif key[2]:  # SGD with momentum: a row's buffer is its first gradient until it has one
            self.started = torch.tensor(
                [bool(t.optimizer.state.get(p[0], {}).get("momentum_buffer") is not None) for t, p in zip(trials, params)], device=device
            )
            self.buffers = {
                name: torch.stack([self._state(t, row[i], "momentum_buffer") for t, row in zip(trials, params)])
                for i, name in enumerate(layers)
            }

    @staticmethod
    def _state(trial: Any, param: torch.Tensor, which: str) -> torch.Tensor:
        value = trial.optimizer.state.get(param, {}).get(which)
        return value.detach().to(param.device) if value is not None else torch.zeros_like(param, memory_format=torch.contiguous_format)

    def _read(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """Each row's hyper-parameters as vectors, read from its trial's param_groups; what the update
        multiplies by is derived (in the parameters' dtype) only when one of them changed."""
        groups = [t.optimizer.param_groups[0] for t in self.trials]
        if self.kind == "adam":
            hyper = tuple((g["lr"], g["betas"][0], g["betas"][1], g["eps"], g["weight_decay"]) for g in groups)
        else:
            hyper = tuple((g["lr"], g["momentum"], g["dampening"], g["weight_decay"]) for g in groups)
        if hyper != self._hyper:
            self._hyper = hyper
            self.any_decay = any(h[-1] != 0 for h in hyper)
            columns = torch.tensor(hyper, dtype=torch.float64, device=device).T
            if self.kind == "adam":
                lr, beta1, beta2, eps, decay = columns
                self.vectors = {
                    "lr": lr,
                    "beta1": beta1,
                    "beta2": beta2,
                    "keep1": (1 - beta1).to(dtype),
                    "keep2": beta2.to(dtype),
                    "fresh2": (1 - beta2).to(dtype),
                    "eps": eps.to(dtype),
                    "decay": decay.to(dtype),
                    "shrink": (1 - lr * decay).to(dtype),
                }
            else:
                lr, momentum, dampening, decay = columns
                self.vectors = {
                    "lr": lr.to(dtype),
                    "momentum": momentum,
                    "dampening": dampening,
                    "keep": momentum.to(dtype),
                    "fresh": (1 - dampening).to(dtype),
                    "decay": decay.to(dtype),
                }
        return self.vectors

    @torch.no_grad()
    def step(self, layers: dict[str, torch.Tensor]) -> None:
        first = next(iter(layers.values()))
        dtype = first.dtype
        hp = self._read(first.device, dtype)
        if self.kind == "adam":
            self._adam(layers, hp, dtype)
        else:
            self._sgd(layers, hp, dtype)
        if not self._stepped:  # what an optimizer's own step tells its scheduler (else it warns of a skipped first value)
            self._stepped = True
            for trial in self.trials:
                trial.optimizer._opt_called = True

    def _adam(self, layers: dict[str, torch.Tensor], hp: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
        self.steps += 1
        step_size = (-hp["lr"] / (1 - hp["beta1"] ** self.steps)).to(dtype)
        correction2 = (1 - hp["beta2"] ** self.steps).sqrt().to(dtype)
        shrink = hp["shrink"] if self.key[1] else None
        for name, layer in layers.items():
            param, grad = layer.detach()[self.slice], layer.grad[self.slice]
            if self.any_decay:
                if shrink is not None:
                    param.mul_(_rows(shrink, param))
                else:
                    grad = grad.add(param * _rows(hp["decay"], param))
            exp_avg, exp_avg_sq = self.moments["exp_avg"][name], self.moments["exp_avg_sq"][name]
            exp_avg.lerp_(grad, _rows(hp["keep1"], grad))
            exp_avg_sq.mul_(_rows(hp["keep2"], grad)).addcmul_(grad, grad * _rows(hp["fresh2"], grad))
            denom = (exp_avg_sq.sqrt() / _rows(correction2, grad)).add_(_rows(hp["eps"], grad))
            param.addcdiv_(exp_avg * _rows(step_size, grad), denom)

    def _sgd(self, layers: dict[str, torch.Tensor], hp: dict[str, torch.Tensor], dtype: torch.dtype) -> None:
        nesterov, with_momentum = self.key[1], self.key[2]
        keep, fresh = hp["keep"], hp["fresh"]
        # A row without a buffer takes its gradient as it (torch's first step); after the first step every row has one.
        if with_momentum and not self._stepped:
            keep = torch.where(self.started, hp["momentum"], 0.0).to(dtype)
            fresh = torch.where(self.started, 1 - hp["dampening"], 1.0).to(dtype)
            self.started.fill_(True)
        for name, layer in layers.items():
            param, grad = layer.detach()[self.slice], layer.grad[self.slice]
            if self.any_decay:
                grad = grad.add(param * _rows(hp["decay"], param))
            if with_momentum:
                buffer = self.buffers[name]
                buffer.mul_(_rows(keep, buffer)).add_(grad * _rows(fresh, grad))
                grad = grad.add(buffer * _rows(hp["keep"], grad)) if nesterov else buffer
            param.sub_(grad * _rows(hp["lr"], grad))

    def hand_back(self, row: int, names: list[str]) -> None:
        """Write row ``row``'s state into its trial's optimizer, as torch keeps it (clones)."""
        trial = self.trials[row]
        for name in names:
            param = trial.params[name]
            if self.kind == "adam":
                if float(self.steps[row]) == 0:
                    continue
                trial.optimizer.state[param] = {
                    "step": torch.tensor(float(self.steps[row]), dtype=_scalar_dtype()),
                    "exp_avg": self.moments["exp_avg"][name][row].clone(),
                    "exp_avg_sq": self.moments["exp_avg_sq"][name][row].clone(),
                }
            elif self.key[2] and bool(self.started[row]):
                trial.optimizer.state[param] = {"momentum_buffer": self.buffers[name][row].clone()}


class Stack:
    """The trials of a group, stacked: ``params``, ``frozen`` and ``buffers`` a layer, rows in
    ``trials``' order (those whose optimizers step together next to each other)."""

    def __init__(self, trials: list[Any]) -> None:
        keys = [stack_key(t.optimizer, list(t.params.values())) for t in trials]
        order = sorted(range(len(trials)), key=lambda i: (keys[i] is None, repr(keys[i])))
        self.trials = [trials[i] for i in order]
        keys = [keys[i] for i in order]
        first = self.trials[0]
        with torch.no_grad():
            self.params = {n: torch.stack([t.params[n].detach() for t in self.trials]).requires_grad_() for n in first.params}
            self.frozen = {n: torch.stack([t.frozen[n].detach() for t in self.trials]) for n in first.frozen}
            self.buffers = {n: torch.stack([t.buffers[n].detach() for t in self.trials]) for n in first.buffers}
        self.updates: list[_Update] = []
        start = 0
        while start < len(keys) and keys[start] is not None:
            stop = start
            while stop < len(keys) and keys[stop] == keys[start]:
                stop += 1
            self.updates.append(_Update(keys[start], self.trials[start:stop], start, self.params))
            start = stop
        self.alone = list(range(start, len(keys)))  # rows whose optimizers step on their own
        for row, trial in enumerate(self.trials):  # its tensors become views of its rows
            for own, stacked in ((trial.params, self.params), (trial.frozen, self.frozen), (trial.buffers, self.buffers)):
                for name, tensor in own.items():
                    tensor.data = stacked[name].detach()[row]
        device = next(iter(self.params.values())).device if self.params else None
        self.clips = torch.tensor([float(t.clip) if t.clip else math.inf for t in self.trials], device=device)

    def zero_grad(self) -> None:
        for layer in self.params.values():
            layer.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Clip each row's gradients by its norm (as ``clip_grad_norm_``), then step every row."""
        grads = [layer.grad for layer in self.params.values() if layer.grad is not None]
        if not grads:
            return
        if self.updates and len(grads) < len(self.params):
            # A layer the loss did not reach: torch's optimizers skip such a parameter (its step count
            # and moments stay); from now on each trial steps on its own optimizer, from its state.
            for trial in self.trials:
                self.hand_back(trial)
            self.updates, self.alone = [], list(range(len(self.trials)))
        if bool(torch.isfinite(self.clips).any()):
            norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)
            coef = (self.clips.to(norms.dtype) / (norms + 1e-6)).clamp(max=1.0)
            for grad in grads:
                grad.mul_(_rows(coef, grad))
        for update in self.updates:
            update.step(self.params)
        for row in self.alone:
            trial = self.trials[row]
            for name, param in trial.params.items():
                grad = self.params[name].grad
                param.grad = grad[row] if grad is not None else None
            trial.optimizer.step()

    def hand_back(self, trial: Any) -> None:
        """The trial's optimizer state, stacked here, back in its optimizer (before a checkpoint)."""
        row = self.trials.index(trial)
        for update in self.updates:
            if update.slice.start <= row < update.slice.stop:
                update.hand_back(row - update.slice.start, list(self.params))

    def release(self) -> None:
        """Every trial's tensors and optimizer state its own again."""
        for trial in self.trials:
            self.hand_back(trial)
            for own in (trial.params, trial.frozen, trial.buffers):
                for tensor in own.values():
                    tensor.data = tensor.data.clone()
                    tensor.grad = None


def own_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A module's state_dict whose tensors own their storage (a stacked row would save the whole stack)."""
    return {name: value.clone() for name, value in module.state_dict().items()}
