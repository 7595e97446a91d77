"""What a run shows on the console and keeps in its folder: the composed config
as a tree at the start, and ``train.log``, a copy of everything the run
printed (warnings included), without the progress bar's redraws."""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from omegaconf import OmegaConf

# Cursor movement, line erasing and carriage returns belong to live displays (progress bars).
_REDRAW = re.compile(r"\r|\x1b\[\??[0-9;]*[ABCDEFGHJKlh]")
_STYLE = re.compile(r"\x1b\[[0-9;]*m|\x1b\][^\x07]*\x07")
FIRST = ("data", "env", "agent", "model", "optimizer", "scheduler", "loss", "trainer", "callbacks", "logger")


_tree_printed = False  # by this process


def print_config(container: dict[str, Any]) -> None:
    """The composed config (resolved, secrets masked) as a rich tree: the groups
    first, one branch each, then the root keys."""
    global _tree_printed
    _tree_printed = True
    from rich.console import Console
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("config", style="bold", guide_style="dim")
    groups = [k for k in FIRST if container.get(k)]
    rest = {k: v for k, v in container.items() if k not in groups}
    for key in groups:
        branch = tree.add(key, style="bold")
        branch.add(Syntax(OmegaConf.to_yaml(container[key]).rstrip(), "yaml", theme="ansi_dark", background_color="default"))
    if rest:
        branch = tree.add("root", style="bold")
        branch.add(Syntax(OmegaConf.to_yaml(rest).rstrip(), "yaml", theme="ansi_dark", background_color="default"))
    Console(soft_wrap=True).print(tree)


def print_job_config(container: Callable[[], dict[str, Any]], in_sweep: bool, overrides: str, config_file: Path) -> None:
    """A run's config (``container()``, made only when shown) as a tree; in a sweep, the first
    job's only: a later job of the same process says its overrides in one line (48 jobs printed
    48 trees of about 100 lines each, alike but for the swept values), its whole config in its
    folder's config.yaml."""
    if in_sweep and _tree_printed:
        print(f"config: {overrides} (all of it: {config_file})")
    else:
        print_config(container())


class _Tee:
    """A text stream that also appends to a log file, without styles or redraws."""

    def __init__(self, stream: TextIO, log: TextIO) -> None:
        self._stream, self._log = stream, log

    def write(self, text: str) -> int:
        written = self._stream.write(text)
        if text and not _REDRAW.search(text):
            try:
                self._log.write(_STYLE.sub("", text))
            except ValueError:  # the log was closed under a thread still printing
                pass
        return written

    def flush(self) -> None:
        self._stream.flush()
        if not self._log.closed:
            self._log.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding...: the terminal's
        return getattr(self._stream, name)


def tee_to(path: Path) -> Any:
    """Copy stdout and stderr into ``path`` (appended) until the returned function is called."""
    path.parent.mkdir(parents=True, exist_ok=True)
    log = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - closed by the returned function
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Tee(saved[0], log), _Tee(saved[1], log)

    def stop() -> None:
        if isinstance(sys.stdout, _Tee) and sys.stdout._log is log:
            sys.stdout = saved[0]
        if isinstance(sys.stderr, _Tee) and sys.stderr._log is log:
            sys.stderr = saved[1]
        log.close()

    return stop
