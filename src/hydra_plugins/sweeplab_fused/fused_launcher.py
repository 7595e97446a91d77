"""``hydra/launcher=fused``: the jobs of a sweep that share an architecture train as one.

The launcher composes every job, groups those whose model, data, trainer and text
set-up are equal (they may differ in optimizer, scheduler, seed, loss, regularisation,
callbacks), and runs each group in this process: every job is the ordinary
``sweeplab-train`` run in a thread of its own, up to its fit and after it; the fit of
the whole group is one vectorised computation (``sweeplab.families.torch.fused``).
Jobs that cannot train together (another architecture, a scikit-learn estimator, an
agent, BatchNorm, a precision other than 32-true or bf16-mixed...) run as the basic launcher runs
them, and the plan printed first says which and why. With ``n_jobs`` above 1 (or ``auto``
choosing so) the groups (and the jobs that run alone) are shared among that many worker
processes, forked from one that imported what a job needs, which run them side by side
(``worker.py``): a sweep of several groups uses several cores.

Hydra imports every module under ``hydra_plugins`` when it starts: this one imports
nothing heavy until a sweep launches.
"""

# No `from __future__ import annotations`: Hydra's scan runs this module before it is in
# sys.modules, where dataclasses would look its string annotations up.
import json
import logging
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, configure_log, run_job, setup_globals
from hydra.experimental.callback import Callback
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger(__name__)
SHARE_OF_FREE = 0.5  # with hydra.launcher.memory=null, a group's round takes at most this share of the memory free
# What trials of one group must share; everything else (optimizer, scheduler, seed, loss,
# param_groups, callbacks, logger) may differ from trial to trial.
SHARED = ("model", "data", "trainer", "text_model", "env", "agent")


@dataclass
class FusedLauncherConf:
    _target_: str = "hydra_plugins.sweeplab_fused.fused_launcher.FusedLauncher"
    max_group: Any = None  # trials in one group at most; null: no cap (the memory sets how many train at once)
    memory: Any = None  # bytes a group's round may take on its device (e.g. 4GB); null: half of what is free
    n_jobs: Any = "auto"  # worker processes running groups side by side; 1: every group in this process; auto: see auto_workers


@dataclass
class Unit:
    """What one process runs in turn: a group's jobs (``name`` set) or one job alone (``alone`` says why)."""

    name: Any
    jobs: list = field(default_factory=list)  # [(index in the batch, composed config)]
    alone: Any = None


ConfigStore.instance().store(group="hydra/launcher", name="fused", node=FusedLauncherConf, provider="sweeplab")


def _why_not_by_config(cfg: DictConfig) -> str | None:
    """Why a job cannot fuse, as far as its config alone tells."""
    if cfg.get("env") or cfg.get("agent"):
        return "an agent in an environment"
    from sweeplab.families import classical

    if classical.is_estimator_config(cfg.model):
        return "a scikit-learn estimator"
    if cfg.get("resume"):
        return "resume= continues a run alone"
    if cfg.get("ckpt_path"):
        return "ckpt_path= starts a run alone"
    return None


def plan(configs: list[DictConfig], max_group: int | None, workers: int = 1) -> tuple[list[list[int]], dict[int, str]]:
    """([job indexes of each group], {job index: why it runs alone}) for composed ``configs``: groups
    of at most ``max_group`` (None: no cap), halved while fewer groups and lone jobs than ``workers``
    would leave a worker process idle."""
    alone: dict[int, str] = {}
    by_key: dict[str, list[int]] = {}
    for index, cfg in enumerate(configs):
        why = _why_not_by_config(cfg)
        if why:
            alone[index] = why
            continue
        shared = {k: OmegaConf.to_container(cfg[k], resolve=False) if isinstance(cfg.get(k), DictConfig) else cfg.get(k) for k in SHARED}
        by_key.setdefault(json.dumps(shared, sort_keys=True, default=str), []).append(index)
    groups: list[list[int]] = []
    for members in by_key.values():
        if len(members) == 1:
            alone[members[0]] = "no other job of the sweep shares its model, data and trainer"
            continue
        cap = max_group or len(members)
        groups += [members[i : i + cap] for i in range(0, len(members), cap)]
    for group in [g for g in groups if len(g) == 1]:  # the tail of a split group
        alone[group[0]] = "the last of a group split at max_group"
        groups.remove(group)
    while len(groups) + len(alone) < workers and groups and max(map(len, groups)) >= 4:
        largest = max(groups, key=len)
        at = groups.index(largest)
        groups[at : at + 1] = [largest[: len(largest) // 2], largest[len(largest) // 2 :]]
    return groups, alone


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# Worker processes are forked from one that imported what a job needs while the batch was composed
# (worker.Zygote), so a worker costs little more than its jobs' own set-up and tails. Measured on
# 2 cores, alternated, 2 workers against one process: 4 jobs (2 a worker) 7.7-8.1 s against
# 8.2-8.4 s, 12 jobs 9.3-9.8 s against 10.6-10.9 s; 48 jobs 15.1-16.0 s against 21.6-22.8 s
# (benchmarks/sweep_vs_plain.py, the same day).
JOBS_PER_WORKER = 4
# What a worker process holds on the host: a forked worker's own pages peaked at 540-560 MiB with a
# group of 24 digits trials (967 MiB resident with the pages it shares with the process it was forked
# from; 855 MiB of its own when each worker imported for itself), rounded up for larger groups' data.
WORKER_ON_HOST = 2**30


def auto_workers(jobs: int, cores: int, on_accelerator: bool, host_free: int | None = None) -> tuple[int, str]:
    """``hydra.launcher.n_jobs=auto``: how many worker processes a batch of ``jobs`` gets, and why.
    One a core, each with at least ``JOBS_PER_WORKER`` jobs, and no more than half the host's free
    memory (``host_free`` bytes) holds at ``WORKER_ON_HOST`` each; none (this process) for jobs on a
    GPU, where one group of many trials is what pays and processes would share the device."""
    if on_accelerator:
        return 1, "this process (the jobs train on an accelerator, which worker processes would share)"
    room = max(1, int(SHARE_OF_FREE * host_free) // WORKER_ON_HOST) if host_free is not None else cores
    n = max(1, min(cores, jobs // JOBS_PER_WORKER, room))
    held = f", memory for {room}" if room < min(cores, jobs // JOBS_PER_WORKER) else ""
    if n == 1:
        return 1, f"this process ({jobs} jobs, {cores} cores{held}; a worker process pays from {JOBS_PER_WORKER} jobs each)"
    return n, f"{n} worker processes ({jobs} jobs, {cores} cores{held})"


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _on_accelerator(configs: list[DictConfig]) -> bool:
    """Whether any job would train on a GPU (or another accelerator torch finds here)."""
    from sweeplab.config import available_accelerators

    if all(str((cfg.get("trainer") or {}).get("accelerator", "auto")) == "cpu" for cfg in configs):
        return False
    return available_accelerators() != ["cpu"]


def _first_batch(config: DictConfig, hydra_context: HydraContext | None) -> int | None:
    """How many jobs the sweeper's first batch will have, where the sweeper tells before it composes them
    (the grid: the product of the sweeps, at most ``max_batch_size``; Optuna: ``n_jobs``); None: unknown."""
    sweeper = OmegaConf.select(config, "hydra.sweeper") or {}
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return int(sweeper.n_jobs) if _whole(sweeper.get("n_jobs")) else None
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()] + list(
        OmegaConf.select(config, "hydra.overrides.task") or []
    )
    values: dict[str, int] = {}
    try:
        loader = hydra_context.config_loader if hydra_context is not None else None  # None: no glob() sweeps
        for override in OverridesParser.create(config_loader=loader).parse_overrides(arguments):
            values[override.get_key_element()] = len(list(override.sweep_string_iterator())) if override.is_sweep_override() else 1
    except Exception:  # noqa: BLE001 - the sweeper reports a bad override itself
        return None
    jobs = 1
    for count in values.values():
        jobs *= count
    return min(jobs, sweeper.max_batch_size) if sweeper.get("max_batch_size") else jobs


def _may_want_workers(config: DictConfig, hydra_context: HydraContext | None, cores: int) -> bool:
    """Whether ``n_jobs=auto`` may give the first batch worker processes, as far as the set-up tells:
    whether it pays to start the process they are forked from before the batch is composed."""
    if str((config.get("trainer") or {}).get("accelerator", "auto")) in ("gpu", "cuda", "mps", "tpu"):
        return False
    jobs = _first_batch(config, hydra_context)
    return cores > 1 and (jobs is None or auto_workers(jobs, cores, on_accelerator=False)[0] > 1)


def _start_zygote(n_jobs: Any, config: DictConfig, hydra_context: HydraContext | None) -> Any:
    """The process workers are forked from (``worker.Zygote``), started now where ``n_jobs`` will
    want workers (``auto``: where the first batch may get them); None otherwise."""
    cores = _usable_cores()
    if not (_whole(n_jobs) and n_jobs > 1 or n_jobs == "auto" and _may_want_workers(config, hydra_context, cores)):
        return None
    from hydra_plugins.sweeplab_fused import worker

    return worker.Zygote(cores if n_jobs == "auto" else n_jobs)


_started_early: dict[str, Any] = {}  # the zygote StartWorkersEarly started, until the launcher takes it


class StartWorkersEarly(Callback):
    """``hydra.callbacks.fused_workers`` (conf/train.yaml, before sweeplab's own callback): as a
    multirun on this launcher starts, the process its workers are forked from starts too, about a
    second before Hydra sets the launcher up (while sweeplab's callback opens the sweep's MLflow run)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = config.hydra.launcher
        if not str(launcher.get("_target_", "")).endswith(".FusedLauncher") or "zygote" in _started_early:
            return
        zygote = _start_zygote(launcher.get("n_jobs", "auto"), config, None)
        if zygote is not None:
            _started_early["zygote"] = zygote


class FusedLauncher(Launcher):
    def __init__(self, max_group: Any = None, n_jobs: Any = "auto", memory: Any = None) -> None:
        super().__init__()
        if max_group is not None and (not _whole(max_group) or max_group < 2):
            raise ValueError(
                f"hydra.launcher.max_group={max_group!r}: give a whole number of trials, 2 or more (or null: as many as the memory holds)"
            )
        if n_jobs != "auto" and (not _whole(n_jobs) or n_jobs < 1):
            raise ValueError(
                f"hydra.launcher.n_jobs={n_jobs!r}: give a whole number of worker processes, 1 or more (1: all in this process), "
                "or auto (a worker a core for large sweeps on the CPU)"
            )
        self.max_group: int | None = max_group
        self.memory = parse_memory(memory)
        self.asked = n_jobs
        self.n_jobs = 1 if n_jobs == "auto" else n_jobs  # auto: decided for each batch, once it is composed
        self.groups_launched = 0
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self.zygote: Any = None  # the process worker processes are forked from (worker.Zygote)

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        self.composed, self.compose_now = _keep_compositions(hydra_context.config_loader, config)
        # It imports what a job needs while the sweeper composes the batch.
        self.zygote = _started_early.pop("zygote", None)
        if self.zygote is None:
            self.zygote = _start_zygote(self.asked, config, hydra_context)

    def _compose(self, overrides: list[str]) -> DictConfig:
        """A job's config: the one the sweeper composed to check the batch, else composed now."""
        kept = self.composed.pop(tuple(overrides), None)
        return kept if kept is not None else self.compose_now(self.config, overrides)

    def _run(self, cfg: DictConfig) -> JobReturn:
        assert self.hydra_context is not None and self.task_function is not None
        return run_job(
            hydra_context=self.hydra_context,
            task_function=self.task_function,
            config=cfg,
            job_dir_key="hydra.sweep.dir",
            job_subdir_key="hydra.sweep.subdir",
        )

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.config is not None and self.hydra_context is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = []
        for index, overrides in enumerate(job_overrides):
            cfg = self._compose(list(overrides))
            with open_dict(cfg):
                cfg.hydra.job.id = cfg.hydra.job.num = initial_job_idx + index
            configs.append(cfg)
        why_workers = None
        if self.asked == "auto":
            import torch

            from sweeplab.families.torch.fused import free_memory

            host_free = free_memory(torch.device("cpu"))[1]
            self.n_jobs, why_workers = auto_workers(len(configs), _usable_cores(), _on_accelerator(configs), host_free)
        groups, alone = plan(configs, self.max_group, self.n_jobs)
        names = [f"g{self.groups_launched + n}" for n in range(1, len(groups) + 1)]  # an Optuna sweep launches batch after batch
        self.groups_launched += len(groups)
        label = {i: name for name, group in zip(names, groups) for i in group}
        print(_describe(dict(zip(names, groups)), alone, initial_job_idx), flush=True)
        if why_workers:
            print(f"sweeplab fused: hydra.launcher.n_jobs=auto: {why_workers}", flush=True)
        units = [Unit(name, [(i, configs[i]) for i in group]) for name, group in zip(names, groups)]
        units += [Unit(None, [(i, configs[i])], why) for i, why in sorted(alone.items()) if i not in label]
        returns: dict[int, JobReturn] = {}
        from hydra_plugins.sweeplab_fused import worker

        workers = min(self.n_jobs, len(units)) if self.n_jobs > 1 and len(units) > 1 else 0  # n_jobs=1: all in this process
        if workers and (self.zygote is None or self.zygote.process.poll() is not None):
            self.zygote = worker.Zygote(self.n_jobs)
        elif not workers and self.zygote is not None:  # its memory back; a later batch that needs one starts one
            self.zygote.close(unused=not self.zygote.workers)
            self.zygote = None
        if workers:
            pending = worker.run_in_workers(self, units, initial_job_idx, returns, self.zygote)
        else:
            pending = self.run_units(units, initial_job_idx, returns)
        if pending is not None:
            raise pending
        return [returns[i] for i in range(len(configs)) if i in returns]

    def run_units(self, units: list[Unit], first: int, returns: dict[int, JobReturn]) -> BaseException | None:
        """Run ``units`` in turn into ``returns``; return the interrupt that ended them, if one did."""
        from sweeplab import signals
        from sweeplab.sweeps.fused import running_alone

        assert self.config is not None
        for unit in units:
            if unit.name is not None:
                # A job run alone before (an earlier Optuna batch) leaves a late signal ending the process at once.
                previous = signals.catch()
                try:
                    pending = self._run_group(unit.name, unit.jobs, first, returns)
                finally:
                    signals.restore(previous)
            else:
                (index, cfg), pending = unit.jobs[0], None
                running_alone(unit.alone)
                try:
                    returns[index] = self._run(cfg)
                except KeyboardInterrupt as exc:
                    pending = exc
                finally:
                    running_alone(None)
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            if pending is not None:
                return pending
        return None

    def _run_group(self, name: str, jobs: list[tuple[int, DictConfig]], first: int, returns: dict[int, JobReturn]) -> BaseException | None:
        """Run one group's jobs, in rounds of as many as the memory holds; return the interrupt that ended it, if one did."""
        from sweeplab.families.torch import fused as fused_torch
        from sweeplab.record import tracking
        from sweeplab.sweeps.fused import Member

        assert self.config is not None
        label = f"{tracking.sweep_id_of(self.config.hydra.sweep.dir)}/{name}"
        members = [Member(num=first + i, group=label, console=(sys.stdout, sys.stderr)) for i, _ in jobs]
        stop: BaseException | None = None  # Ctrl-C or SIGTERM (they reach this thread): every open run ends KILLED
        size: int | None = None  # the round's size, once the first job that reached its fit tells a trial's memory
        start = rounds_done = 0
        while start < len(jobs) and stop is None:
            round_ = []
            for member, (_, cfg) in zip(members[start:], jobs[start:]):
                if size is not None and len(round_) == size:
                    break
                round_.append(member)
                try:
                    member.run(lambda cfg=cfg: self._run(cfg))  # up to its fit (or its end: skipped, a bad config)
                except KeyboardInterrupt as exc:
                    stop = exc
                    member.wait_paused()
                    break
                if size is None and member.waiting and fused_torch.why_alone(member.family) is None:
                    size = self._round_size(name, member.family, len(jobs) - start)
            start += len(round_)
            in_rounds = size is not None and size < len(jobs)
            for member in round_ if in_rounds else []:
                member.round = rounds_done + 1
            rounds_done += 1
            stop = self._train_round(name, label, round_, stop, in_rounds=in_rounds)
        for member, (index, _) in zip(members, jobs):
            if member.error is not None and stop is None:
                stop = member.error  # run_job returns a job's own failure; what escapes it is an interrupt
            if member.result is not None:
                returns[index] = member.result
        return stop

    def _round_size(self, name: str, family: Any, jobs: int) -> int:
        """How many trials like ``family`` train at once: those whose estimated memory fits in
        ``hydra.launcher.memory`` (null: half of what is free, over ``n_jobs``) on its device and on
        the host, and whose runs the open-file limit leaves room for."""
        from sweeplab.families.torch import fused as fused_torch

        device = family.trainer.strategy.root_device
        on_device, on_host = fused_torch.memory_per_trial(family)
        free_device, free_host = fused_torch.free_memory(device)
        share = SHARE_OF_FREE / self.n_jobs  # worker processes side by side share what is free
        allowed = self.memory if self.memory is not None else int(free_device * share)
        if device.type == "cpu":
            size, per_trial = allowed // (on_device + on_host), on_device + on_host
        else:
            size, per_trial = min(allowed // on_device, int(free_host * share) // on_host), on_device
        files = _open_file_room()
        if min(size, files) >= jobs:
            return jobs
        rounds = -(-jobs // max(1, min(size, files)))
        where = "hydra.launcher.memory" if self.memory is not None else f"half the memory free on {device}"
        where += f", shared by {self.n_jobs} worker processes" if self.n_jobs > 1 and self.memory is None else ""
        why = f"about {_size(per_trial)} a trial, {_size(allowed)} allowed ({where})"
        if files < size:
            why = f"{files} runs open at once at most, an eighth of the open-file limit (ulimit -n)"
        size = -(-jobs // rounds)  # rounds of even size: 3, 2, 2 rather than 3, 3, 1
        print(f"sweeplab fused: {name}: trains in {rounds} rounds of up to {size} jobs: {why}", flush=True)
        return size

    def _train_round(self, name: str, label: str, members: list, stop: BaseException | None, in_rounds: bool) -> BaseException | None:
        """Train the ``members`` of a round that reached their fit together, then let each finish in turn."""
        from sweeplab.families.torch import fused as fused_torch

        assert self.config is not None
        waiting = [m for m in members if m.waiting]
        together, shape = [], None
        for member in waiting if stop is None else []:
            why = fused_torch.why_alone(member.family)
            if why is None:
                shape = shape or fused_torch.shape_of(member.family)
                if fused_torch.shape_of(member.family) != shape:
                    why = "its parameter shapes, batch size or data size differ from its group's"
            if why is None:
                together.append(member)
            else:
                member.alone = why
        if len(together) == 1:
            rounds = " (its group trains in rounds to fit the memory)" if in_rounds else ""
            together[0].alone, together = f"the only job of its {'round' if in_rounds else 'group'} that reached training{rounds}", []
        outcomes: dict[int, Any] = {}
        if together:
            print(f"sweeplab fused: {name}: jobs {', '.join(str(m.num) for m in together)} train together", flush=True)
            results = fused_torch.train_together(
                [m.family for m in together], label, say=lambda line: print(f"sweeplab fused: {name}: {line}", flush=True)
            )
            outcomes = {m.num: r for m, r in zip(together, results)}
            stop = next((r for r in results if isinstance(r, BaseException) and not isinstance(r, Exception)), None)
        for member in waiting:  # each finishes in turn: tested, reported, FINISHED (or KILLED, FAILED)
            if member.alone and stop is None:
                print(f"sweeplab fused: job {member.num} trains alone: {member.alone}", flush=True)
            try:
                member.go_on(stop if stop is not None else outcomes.get(member.num))
            except KeyboardInterrupt as exc:  # this job still closes its run; the ones after it end KILLED
                stop = exc
                member.wait_done()
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return stop


def _open_file_room() -> int:
    """Runs one round may hold open: an eighth of the open-file limit (a run keeps 2 or 3 files open
    while it waits: its train.log, the store), so a large group cannot run the process out of them."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return sys.maxsize
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return sys.maxsize if soft == resource.RLIM_INFINITY else max(2, soft // 8)


def _size(n: float) -> str:
    """Bytes as people read them: 17.6 MiB, 2.3 GiB."""
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def parse_memory(value: Any) -> int | None:
    """``hydra.launcher.memory`` in bytes: a whole number of bytes or a size such as 512MB, 4GiB (None: null)."""
    if value is None:
        return None
    if _whole(value) and value > 0:
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)\s*", str(value), flags=re.IGNORECASE)
    if match is None or float(match[1]) <= 0:
        raise ValueError(
            f"hydra.launcher.memory={value!r}: give bytes a group may use, e.g. 4GB, 512MiB or 1000000 (null: half of what is free)"
        )
    unit = match[2].upper()
    scale = 1 if unit == "B" else (1024 if "I" in unit else 1000) ** ("KMGT".index(unit[0]) + 1)
    return int(float(match[1]) * scale)


def _keep_compositions(loader: Any, master: DictConfig) -> tuple[dict[tuple[str, ...], DictConfig], Any]:
    """Keep what ``loader`` composes for ``master``'s jobs until the launcher takes it, and return
    the loader's own composition: a sweeper composes every job of a batch to check it
    (``validate_batch_is_legal``) just before it hands the batch over, then throws its copy
    away, and the launcher would compose each job again (0.1 s a job). Each shape of job is
    composed once (``compose.shape_composer``)."""
    from hydra_plugins.sweeplab_fused.compose import shape_composer

    kept: dict[tuple[str, ...], DictConfig] = {}
    compose = shape_composer(loader)

    def load_sweep_config(master_config: DictConfig, sweep_overrides: list[str]) -> DictConfig:
        cfg = compose(master_config, sweep_overrides)
        if master_config is master:
            kept[tuple(sweep_overrides)] = cfg
        return cfg

    loader.load_sweep_config = load_sweep_config
    return kept, compose


def _describe(groups: dict[str, list[int]], alone: dict[int, str], first: int) -> str:
    lines = [f"sweeplab fused: {sum(map(len, groups.values())) + len(alone)} jobs, {len(groups)} group(s)"]
    for name, group in groups.items():
        lines.append(f"  {name}: jobs {', '.join(str(first + i) for i in group)}")
    for index, why in sorted(alone.items()):
        lines.append(f"  job {first + index} runs alone: {why}")
    return "\n".join(lines)
