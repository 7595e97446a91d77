"""The parts of a fused group's loop, each against what a solo run does: the stacked parameters
and their one optimizer step (each row moves as its trial's own torch optimizer moves it: SGD,
Adam, AdamW stacked, others on their own, with gradient clipping and a scheduler; each trial's
state its optimizer's again when the stack lets go), and the epoch's metric points written to
the store in one transaction (the same points a run's own logger writes)."""

from __future__ import annotations

import itertools
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from torch.func import functional_call, vmap

from sweeplab.families.torch.stacked import Stack, own_state_dict, stack_key

OPTIMIZERS = [  # (optimizer, gradient clip): every kind of row, some twice with other values
    (lambda p: torch.optim.Adam(p, lr=0.01), None),
    (lambda p: torch.optim.Adam(p, lr=0.003, betas=(0.8, 0.99), weight_decay=0.1), 0.5),
    (lambda p: torch.optim.AdamW(p, lr=0.02, weight_decay=0.05), None),
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), 1.0),
    (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.5, dampening=0.1, weight_decay=0.01), None),
    (lambda p: torch.optim.SGD(p, lr=0.2, momentum=0.9, nesterov=True), None),
    (lambda p: torch.optim.SGD(p, lr=0.3), None),
    (lambda p: torch.optim.Adagrad(p, lr=0.05), 0.7),  # steps on its own
    (lambda p: torch.optim.Adam(p, lr=0.01, amsgrad=True), None),  # on its own too
]


def _net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def _trial(seed: int, make, clip) -> SimpleNamespace:
    net = _net(seed)
    optimizer = make(list(net.parameters()))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    params = dict(net.named_parameters())
    return SimpleNamespace(net=net, optimizer=optimizer, scheduler=scheduler, clip=clip, params=params, frozen={}, buffers={})


def _solo_steps(trial: SimpleNamespace, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for x, y in batches:
        trial.optimizer.zero_grad()
        nn.functional.cross_entropy(trial.net(x), y).backward()
        if trial.clip:
            nn.utils.clip_grad_norm_(trial.net.parameters(), trial.clip)
        trial.optimizer.step()
        trial.scheduler.step()


def _stacked_steps(stack: Stack, batches: dict[int, list], start: int, stop: int) -> None:
    template = stack.trials[0].net

    def forward(params, x):
        return functional_call(template, params, (x,))

    for b in range(start, stop):
        x = torch.stack([batches[id(t)][b][0] for t in stack.trials])
        y = torch.stack([batches[id(t)][b][1] for t in stack.trials])
        out = vmap(forward)(stack.params, x)
        losses = nn.functional.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").view(len(stack.trials), -1).mean(1)
        stack.zero_grad()
        losses.sum().backward()
        stack.step()
        for trial in stack.trials:
            trial.scheduler.step()


@pytest.mark.filterwarnings("error")  # a scheduler warns if it saw no optimizer step before its own
def test_each_row_steps_as_its_own_optimizer_would() -> None:
    generator = torch.Generator().manual_seed(0)
    solo = [_trial(n, make, clip) for n, (make, clip) in enumerate(OPTIMIZERS)]
    fused = [_trial(n, make, clip) for n, (make, clip) in enumerate(OPTIMIZERS)]
    batches = {}
    for s, f in zip(solo, fused):
        data = [(torch.randn(8, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator)) for _ in range(7)]
        batches[id(s)] = batches[id(f)] = data
    keys = [stack_key(t.optimizer, list(t.params.values())) for t in fused]
    assert keys[-2:] == [None, None] and len(set(keys[:-2])) == 5  # Adagrad and amsgrad step alone

    stack = Stack(fused)
    assert {id(t) for t in stack.trials} == {id(t) for t in fused} and len(stack.alone) == 2
    _stacked_steps(stack, batches, 0, 4)
    # Two trials leave; the others go on in a new stack built from their handed-back state.
    stack.release()
    for trial in fused:
        for tensor in trial.params.values():  # each owns its storage again
            assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    staying = [fused[i] for i in (0, 1, 3, 5, 7)]
    stack = Stack(staying)
    _stacked_steps(stack, batches, 4, 7)
    stack.release()

    for n, (s, f) in enumerate(zip(solo, fused)):
        _solo_steps(s, batches[id(s)][: 7 if f in staying else 4])
        for name, param in s.params.items():
            torch.testing.assert_close(f.params[name], param, rtol=1e-5, atol=1e-6, msg=f"{n}: {name}")
        mine, theirs = f.optimizer.state_dict(), s.optimizer.state_dict()
        assert mine["param_groups"] == theirs["param_groups"], n
        assert mine["state"].keys() == theirs["state"].keys(), n
        for index, state in theirs["state"].items():
            assert state.keys() == mine["state"][index].keys(), n
            for key, value in state.items():
                torch.testing.assert_close(mine["state"][index][key], value, rtol=1e-5, atol=1e-6, msg=f"{n}: {key}")
                assert mine["state"][index][key].dtype == value.dtype


class _WithAnUnusedLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used, self.unused = nn.Linear(6, 3), nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.used(x)


def test_a_layer_the_loss_does_not_reach_is_skipped_as_torch_skips_it() -> None:
    """Its gradient is None: torch's Adam leaves it (no state, no step); every row then steps on its
    own optimizer, from the state the stack hands back."""
    solo, fused = [], []
    for trials in (solo, fused):
        for n, lr in enumerate((0.01, 0.05)):
            torch.manual_seed(n)
            net = _WithAnUnusedLayer()
            params = dict(net.named_parameters())
            trials.append(
                SimpleNamespace(
                    net=net, optimizer=torch.optim.Adam(net.parameters(), lr=lr), clip=None, params=params, frozen={}, buffers={}
                )
            )
    generator = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 6, generator=generator), torch.randint(0, 3, (8,), generator=generator)) for _ in range(3)]
    stack = Stack(fused)
    template = stack.trials[0].net
    for x, y in data:
        out = vmap(lambda params, x: functional_call(template, params, (x,)), in_dims=(0, None))(stack.params, x)
        stack.zero_grad()
        sum(nn.functional.cross_entropy(o, y) for o in out).backward()
        stack.step()
    stack.release()
    for s, f in zip(solo, fused):
        for x, y in data:
            s.optimizer.zero_grad()
            nn.functional.cross_entropy(s.net(x), y).backward()
            s.optimizer.step()
        for name, param in s.params.items():
            torch.testing.assert_close(f.params[name], param, rtol=1e-5, atol=1e-6, msg=name)
        assert f.optimizer.state_dict()["state"].keys() == s.optimizer.state_dict()["state"].keys() == {0, 1}


def test_a_saved_row_holds_its_trial_only() -> None:
    trials = [_trial(n, OPTIMIZERS[0][0], None) for n in range(4)]
    stack = Stack(trials)
    state = own_state_dict(trials[2].net)
    assert all(v.untyped_storage().nbytes() == v.numel() * v.element_size() for v in state.values())
    with torch.no_grad():
        stack.params["0.weight"][2] += 1.0  # a row is its trial's parameters
    assert torch.equal(trials[2].params["0.weight"], stack.params["0.weight"][2])
    assert not torch.equal(state["0.weight"], trials[2].params["0.weight"])
    stack.release()


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda p: torch.optim.Adam(p, maximize=True), "maximize"),
        (lambda p: torch.optim.Adam([{"params": p[:2]}, {"params": p[2:], "lr": 0.1}]), "two parameter groups"),
        (lambda p: torch.optim.Adam(p[:2]), "a parameter it does not step"),
        (lambda p: torch.optim.RMSprop(p), "another kind"),
    ],
)
def test_optimizers_the_stack_cannot_step_step_alone(make, why: str) -> None:
    net = _net(0)
    assert stack_key(make(list(net.parameters())), list(net.parameters())) is None, why


def _history(uri: str, run_id: str) -> dict[str, list[tuple[int, float]]]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    run = client.get_run(run_id)
    history = {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}
    return {"latest": sorted(run.data.metrics.items()), **history}


@pytest.mark.parametrize("transaction_fails", [False, True])
def test_a_groups_metric_points_reach_the_store_as_each_runs_logger_writes_them(
    transaction_fails: bool, tmp_path: Path, monkeypatch
) -> None:
    """Inside writes_together() the runs' points go in one transaction (no log_batch call); if it
    fails, each run's logger sends its own. Either way each run holds what logging outside gives."""
    from lightning.pytorch.loggers import MLFlowLogger
    from mlflow.tracking import MlflowClient

    from sweeplab.record import publish, tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracking.new_sqlite_store(tmp_path / "mlflow.db")

    def epoch_end(logger: MLFlowLogger, n: int, epoch: int) -> None:  # as Lightning logs it: validation's values, then training's
        logger.log_metrics({"val/loss": 0.5 + n + epoch, "epoch": float(epoch)}, step=10 * epoch + 9)
        logger.log_metrics({"train/loss": 0.7 + n, "lr": 0.1 / (epoch + 1), "epoch": float(epoch)}, step=10 * epoch + 9)

    def attached(name: str) -> MLFlowLogger:
        logger = MLFlowLogger(experiment_name="group", tracking_uri=uri, run_name=name)
        publish.Outbox(logger.experiment, logger.run_id, tmp_path, uri).attach(logger)
        return logger

    alone = [attached(f"alone{n}") for n in range(3)]
    for epoch in range(2):
        for n, logger in enumerate(alone):
            epoch_end(logger, n, epoch)
    together = [attached(f"together{n}") for n in range(3)]
    calls = []
    log_batch = MlflowClient.log_batch
    monkeypatch.setattr(MlflowClient, "log_batch", lambda self, *a, **k: calls.append(a) or log_batch(self, *a, **k))
    if transaction_fails:
        monkeypatch.setattr(tracking, "write_points_together", lambda *a: (_ for _ in ()).throw(RuntimeError("database is locked")))
    for epoch in range(2):
        with publish.writes_together():
            for n, logger in enumerate(together):
                epoch_end(logger, n, epoch)
    assert len(calls) == (6 if transaction_fails else 0)
    for a, t in zip(alone, together):
        assert _history(uri, t.run_id) == _history(uri, a.run_id)


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_loaders_batch_order_is_its_batches_drawn_as_iterating_draws(split: str) -> None:
    """A group reads each trial's in-memory loader as one gather a step: the same batches, in the
    same order, the global generator left as iterating the loader leaves it."""
    from sweeplab.data.base import batch_order
    from sweeplab.data.sklearn_data import DigitsDataModule

    data = DigitsDataModule(batch_size=100, seed=3)
    data.setup("fit")
    loader = data.train_dataloader() if split == "train" else data.val_dataloader()
    torch.manual_seed(7)
    iterated = list(loader)
    after = torch.get_rng_state()
    torch.manual_seed(7)
    x, y, batches = batch_order(loader)
    assert torch.equal(torch.get_rng_state(), after)
    assert [len(b) for b in batches] == [len(b[1]) for b in iterated] and len(batches) > 1
    for positions, (bx, by) in zip(batches, iterated):
        assert torch.equal(x[positions], bx) and torch.equal(y[positions], by)
    torch.manual_seed(8)
    assert batch_order(loader)[2] != batches or split == "val"  # another stream, another shuffle


_PREPARED = itertools.count()  # each prepared trial its own run folder, two of one seed too


def _prepared(tmp_path: Path, seed: int, precision: str, *more: str):
    from sweeplab.config import compose
    from sweeplab.families.torch.family import TorchFamily

    run_dir = tmp_path / f"{precision}-{seed}-{next(_PREPARED)}"
    overrides = [f"seed={seed}", f"trainer.precision={precision}", "trainer.max_epochs=1", "model.dropout=0", *more]
    family = TorchFamily(compose(overrides, run_dir=run_dir))
    family.prepare()
    family.attach([], run_dir)
    family.rng_at_fit = torch.get_rng_state()
    return family


@pytest.mark.parametrize(("precision", "autocast"), [("32-true", None), ("bf16-mixed", torch.bfloat16)])
def test_a_group_runs_its_forward_in_its_trials_precision(tmp_path: Path, precision: str, autocast: torch.dtype | None) -> None:
    """Each forward of the group (training and validation) runs under the autocast a solo step of its
    precision runs under, and the weights stay fp32: bf16-mixed trials fuse as bf16-mixed."""
    from sweeplab.families.torch.fused import train_together, why_alone

    families = [_prepared(tmp_path, seed, precision) for seed in (1, 2)]
    assert [why_alone(f) for f in families] == [None, None]
    seen = []

    def note(module: nn.Module, _inputs) -> None:
        on = torch.is_autocast_enabled("cpu")
        seen.append((module.training, torch.get_autocast_dtype("cpu") if on else None))

    families[0].module.net.register_forward_pre_hook(note)
    outcomes = train_together(families, "g1", say=lambda _line: None)
    assert all(isinstance(outcome, tuple) for outcome in outcomes), outcomes
    assert {training for training, _ in seen} == {True, False}  # training and validation batches
    assert {dtype for _, dtype in seen} == {autocast}
    assert all(p.dtype == torch.float32 for f in families for p in f.module.net.parameters())
    assert all(0.0 < outcome[0]["val/accuracy"] <= 1.0 for outcome in outcomes)


def test_a_precision_a_group_cannot_run_is_named(tmp_path: Path) -> None:
    from sweeplab.families.torch.fused import why_alone

    assert why_alone(_prepared(tmp_path, 1, "64-true")) == "trainer.precision=64-true (groups train in 32-true or bf16-mixed)"


def test_a_groups_test_is_each_trials_lightning_test(tmp_path: Path) -> None:
    """The group tests its trials in one vectorised pass, each on its best checkpoint: the values and
    predictions are those Lightning's trainer.test gives on the same checkpoint, and each module is
    left holding its best weights (its logged model is of them)."""
    from sweeplab.families.torch.fused import train_together
    from sweeplab.families.torch.module import LightningData

    # The best epoch by the highest val/loss is the first: its weights are not those training ends with.
    worst_is_best = ["trainer.max_epochs=3", "monitor_mode=max"]
    families = [_prepared(tmp_path, seed, "32-true", *worst_is_best) for seed in (1, 2, 3)]
    outcomes = train_together(families, "g1", say=lambda _line: None)
    for family, (metrics, best, epochs, steps, tested) in zip(families, outcomes, strict=True):
        assert tested and best is not None and epochs == 3 and steps > 0
        assert torch.load(best, weights_only=True)["epoch"] == 0
        grouped = {k: v for k, v in metrics.items() if k.startswith("test/")}
        assert set(grouped) == {"test/loss", "test/accuracy", "test/precision", "test/recall", "test/f1"}
        predicted = torch.cat(family.module.test_predictions)
        weights = {k: v.clone() for k, v in family.module.state_dict().items()}
        family.trainer.test(family.module, datamodule=LightningData(family.datamodule), ckpt_path=str(best), verbose=False)
        alone = {k: float(v) for k, v in family.trainer.callback_metrics.items() if k.startswith("test/")}
        assert alone == pytest.approx(grouped, rel=1e-5)
        assert torch.equal(torch.cat(family.module.test_predictions), predicted)
        assert all(torch.equal(weights[k], v) for k, v in family.module.state_dict().items())  # the best weights, as loaded


def test_a_group_test_that_fails_leaves_each_trial_to_lightnings_own(tmp_path: Path, monkeypatch) -> None:
    """The group's test stops halfway (some test batches scored): it says so, and each trial is then
    tested by Lightning from a clean count, as a solo run is."""
    from sweeplab.families.torch.family import test_and_report
    from sweeplab.families.torch.fused import train_together
    from sweeplab.families.torch.module import LightningData, SweepModule

    families = [_prepared(tmp_path, seed, "32-true") for seed in (1, 2)]
    score, tests = SweepModule.score, []

    def breaks_at_the_third_test_batch(self, output, x, y, stage):
        if stage == "test":
            tests.append(stage)
            if len(tests) == 3:
                raise RuntimeError("a test batch failed")
        return score(self, output, x, y, stage)

    monkeypatch.setattr(SweepModule, "score", breaks_at_the_third_test_batch)
    said: list[str] = []
    outcomes = train_together(families, "g1", say=said.append)
    monkeypatch.undo()
    assert "the group's test stopped (RuntimeError: a test batch failed); each trial is tested on its own" in said
    for family, (metrics, best, _, _, tested) in zip(families, outcomes, strict=True):
        assert not tested and not any(k.startswith("test/") for k in metrics)
        tested_alone, _ = test_and_report(family.module, family.trainer, family.datamodule, family.run_dir, str(best), dict(metrics))
        family.trainer.test(family.module, datamodule=LightningData(family.datamodule), ckpt_path=str(best), verbose=False)
        again = {k: float(v) for k, v in family.trainer.callback_metrics.items() if k.startswith("test/")}
        assert again == {k: v for k, v in tested_alone.items() if k.startswith("test/")}


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_two_trials_of_one_seed_in_a_group_differ_only_by_their_dropout_masks(tmp_path: Path, dropout: float) -> None:
    """Without dropout, two trials of one seed in a group are one run twice: every value equal. With
    dropout each trial draws its own masks (vmap's randomness="different"), so their values differ,
    as two draws of the masks do (benchmarks/fused_dropout.py compares such scores with solo runs')."""
    from sweeplab.families.torch.fused import train_together

    families = [_prepared(tmp_path, 1, "32-true", f"model.dropout={dropout}") for _ in range(2)]
    first, second = (outcome[0] for outcome in train_together(families, "g1", say=lambda _line: None))
    assert set(first) == set(second) and "test/loss" in first
    if dropout:
        assert first["train/loss"] != second["train/loss"] and first["test/loss"] != second["test/loss"]
    else:
        assert first == second


def test_a_workers_result_is_pickled_and_read_without_the_garbage_collector(tmp_path: Path) -> None:
    """Collections set off by pickling 24 jobs' returns, over the heap the jobs left, made a 0.05 s
    pickle take 0.9 s at the end of each worker; the launcher's read likewise (0.12 s)."""
    import subprocess
    import sys

    code = (
        "import gc, sys, cloudpickle\n"
        "from hydra_plugins.sweeplab_fused import worker\n"
        "seen = []\n"
        "dumps, loads = cloudpickle.dumps, cloudpickle.loads\n"
        "cloudpickle.dumps = lambda *a, **k: seen.append(('dumps', gc.isenabled())) or dumps(*a, **k)\n"
        "cloudpickle.loads = lambda *a, **k: seen.append(('loads', gc.isenabled())) or loads(*a, **k)\n"
        "gc.enable()\n"
        "worker.serve(sys.argv[1], b'not a pickle')\n"  # its work unreadable: it reports the error
        "gc.enable()\n"
        "returns, pending = worker._unpickled(open(sys.argv[1], 'rb').read())\n"
        "print(seen, returns, type(pending).__name__, gc.isenabled())\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "result")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split("] ", 1)[0] + "]" == "[('loads', True), ('dumps', False), ('loads', False)]"
    assert result.stdout.split("] ", 1)[1].split() == ["{}", "UnpicklingError", "True"]
