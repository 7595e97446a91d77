"""A fused sweep's jobs meet here (``hydra/launcher=fused``).

Each job of a group runs the ordinary ``train.run`` in a thread of its own, one
thread at a time: everything up to the fit (config checks, data, model, its MLflow
run) and everything after it (test on its best checkpoint, reports, model, FINISHED)
is the solo code. At the fit the job's family calls ``train_with_others``: the
thread hands its console and Hydra context back and waits; once every job of the
group is waiting, the launcher trains them together on the main thread (signals
reach only it) and lets each thread go on, one after another, with its outcome.

Nothing here knows how a group trains: the launcher passes the trainer in.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

GROUP_TAG = "sweeplab.fused_group"  # on each run that trained in a group: "<sweep id>/<group>"
WORKERS_ENV = "SWEEPLAB_FUSED_WORKERS"  # set in the launcher's worker processes (n_jobs > 1): how many it has
_local = threading.local()  # the Member a job's thread is, if it runs in a fused group


@dataclass
class Member:
    """One job of a group, run by ``run`` in its own thread."""

    num: int  # the Hydra job number
    group: str  # the group's label, "<sweep id>/g1"
    console: tuple[Any, Any] = (None, None)  # the launcher's stdout and stderr, while the job waits
    family: Any = None  # what reached the fit: the job's family, set when it waits
    outcome: Any = None  # what the launcher hands back: the training's result or an exception
    alone: str | None = None  # why this job trained alone, if it did
    round: int = 0  # its round, where its group trained in rounds to fit the memory (0: all at once)
    result: Any = None  # what the thread's function returned
    error: BaseException | None = None  # what it raised
    _paused: threading.Event = field(default_factory=threading.Event)  # at the fit, or done
    _go: threading.Event = field(default_factory=threading.Event)
    _done: bool = False
    _thread: threading.Thread | None = None

    def run(self, function: Callable[[], Any]) -> None:
        """Start the job; return once it waits at its fit or has ended (a bad config, a skipped job)."""

        def body() -> None:
            _local.member = self
            try:
                self.result = function()
            except BaseException as exc:  # noqa: BLE001 - handed to the launcher, which raises it in order
                self.error = exc
            finally:
                self._done = True
                self._paused.set()

        self._thread = threading.Thread(target=body, name=f"sweeplab-job-{self.num}", daemon=True)
        self._thread.start()
        self._paused.wait()

    @property
    def waiting(self) -> bool:
        return not self._done and self.family is not None

    def go_on(self, outcome: Any) -> None:
        """Hand the job its outcome and let it finish; return once it has."""
        self.outcome = outcome
        self._go.set()
        self.wait_done()

    def wait_paused(self) -> None:
        self._paused.wait()

    def wait_done(self) -> None:
        assert self._thread is not None
        self._thread.join()


def member() -> Member | None:
    """The fused group's member this thread runs, if any."""
    return getattr(_local, "member", None)


def train_with_others(family: Any) -> Any:
    """Called by a family at its fit, in a fused job: wait until the group has trained.
    Returns what the launcher's trainer made of this job (None: train alone, as solo),
    or raises what ended it (an interrupt, its loss turning NaN)."""
    from hydra.core.hydra_config import HydraConfig

    me = member()
    assert me is not None
    hydra_config = HydraConfig.instance().cfg
    console = sys.stdout, sys.stderr  # the job's own: its train.log tee
    sys.stdout, sys.stderr = me.console
    me.family = family
    me._paused.set()
    me._go.wait()
    sys.stdout, sys.stderr = console
    HydraConfig.instance().cfg = hydra_config
    if isinstance(me.outcome, BaseException):
        raise me.outcome
    return me.outcome


def running_alone(why: str | None) -> None:
    """The launcher runs the next job on its own thread, as a solo run, for this reason (None: done)."""
    _local.alone = why


def job_record() -> dict[str, Any]:
    """What a job's sweeplab_job.json says of its group, in a fused sweep."""
    me = member()
    if me is None:
        why = getattr(_local, "alone", None)
        return {"alone": why} if why else {}
    if me.alone is not None:
        return {"alone": me.alone}
    return {"fused_group": me.group, "round": me.round} if me.round else {"fused_group": me.group}
