"""Turn any failure of a command into one clear line (full traceback on request).

Hydra prints its own multi-line reports unless HYDRA_FULL_ERROR is set, so
the console scripts set it, catch what comes out, and print one line. A user
who sets HYDRA_FULL_ERROR=1 or SWEEPLAB_DEBUG=1 gets the traceback.
"""

from __future__ import annotations

import difflib
import os
import re
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn


def _debug_requested() -> bool:
    return os.environ.get("SWEEPLAB_DEBUG", "") not in ("", "0") or os.environ.get("_SWEEPLAB_USER_FULL_ERROR") == "1"


def _close_keys(full_key: str) -> list[str]:
    """Keys near a misspelled one, from the default config."""
    try:
        from sweeplab.config import compose

        cfg = compose()
        from omegaconf import OmegaConf

        parent, _, leaf = full_key.rpartition(".")

        node = OmegaConf.select(cfg, parent) if parent else cfg
        keys = list(node.keys()) if hasattr(node, "keys") else []
        return [f"{parent + '.' if parent else ''}{k}" for k in difflib.get_close_matches(leaf, keys, n=3, cutoff=0.5)]
    except Exception:
        return []


def _raised_in(exc: BaseException, function: str) -> bool:
    """Whether the innermost frame of the exception's traceback is ``function``."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_name == function


def some_of(names: list[str], limit: int = 10) -> str:
    """Up to ``limit`` names, then how many more: a list in an error stays one readable line."""
    shown = ", ".join(str(n) for n in names[:limit])
    return f"{shown} and {len(names) - limit} more" if len(names) > limit else shown


def one_line(exc: BaseException) -> str:
    """A single line saying what was wrong and what would be right."""
    from hydra.errors import InstantiationException

    if isinstance(exc, InstantiationException) and exc.__cause__ is not None:
        # "Error in call to target 'X': ValueError(...)": the cause is the message.
        where = re.search(r"full_key: (\S+)", str(exc))
        unexpected = re.search(r"(\w+)\.__init__\(\) got an unexpected keyword argument '(\w+)'", str(exc.__cause__))
        if where and unexpected:  # a key added with +group.key that the chosen class does not take
            owner, key = unexpected.groups()
            return (
                f"{where.group(1)}.{key}: not an option of {owner}, the {where.group(1)} chosen here; "
                f"remove +{where.group(1)}.{key}=... (sweeplab-train --cfg job shows the options it has)"
                + ("; data.task is an option of data=csv, a bundled data set fixes its task" if key == "task" else "")
            )
        inner = one_line(exc.__cause__)
        if not where or inner.startswith((where.group(1) + ".", where.group(1) + "=")):
            return inner
        return f"{where.group(1)}: {inner}"
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.filename and _raised_in(exc, "mkdir"):  # a run or sweep folder that cannot be made
        return (
            f"{exc.filename}: cannot create this folder ({exc.strerror or type(exc).__name__}); run folders and the store go "
            "under paths.outputs (and hydra.run.dir / hydra.sweep.dir): give a folder you can write to"
        )
    resolver = re.match(r"\w+ raised while resolving interpolation: (.*?)\s+full_key: \S+", text, flags=re.DOTALL)
    if resolver:  # a ${required:...} value the user has not given, or a resolver's own error
        return " ".join(resolver.group(1).split())
    mandatory = re.search(r"Missing mandatory value: (\S+)", text)
    if mandatory:
        return f"{mandatory.group(1)} is required and has no value: add {mandatory.group(1)}=..."
    missing = re.search(r"Could not find '([^']+)'", text)
    if missing:
        group, _, option = missing.group(1).rpartition("/")
        options = re.findall(r"^\t(\S+)$", text, flags=re.MULTILINE)
        if options:
            return f"{group}={option}: no such option; valid choices: {', '.join(options)}"
        return f"no config '{missing.group(1)}' in the search path"
    override = re.search(r"Could not override '([^']+)'", text) or re.search(r"Key '([^']+)' is not in struct", text)
    if override:
        full = re.search(r"full_key: (\S+)", text + " " + str(exc.__cause__ or ""))
        key = full.group(1) if full else override.group(1)
        close = _close_keys(key)
        if key in close:  # in the default config: an option chosen here (a preset's override) dropped it
            group = key.split(".", 1)[0]
            why = (
                "tracking is off here (a preset such as debug=fast_dev_run sets logger=none); add logger=mlflow to keep it"
                if group == "logger"
                else f"an option chosen here (or a preset) replaces '{group}' with one that has no such key; choose {group}=... explicitly"
            )
            return f"{key}: not in this config: {why}"
        hint = f"did you mean {' or '.join(close)}?" if close else f"to add a new key use +{key}=..."
        return f"{key}: no such config key; {hint}"
    half_made = re.search(r"\(sqlite3\.OperationalError\) table (\w+) already exists", text)
    if half_made:  # MLflow re-creating a store whose first creation was cut short (a full disk) by an older version
        return (
            f"the MLflow store's creation was cut short earlier (table {half_made.group(1)} exists, its schema is incomplete; a full "
            "disk?): if it holds no runs, delete that mlflow.db (under paths.outputs, or logger.tracking_uri's) and run again"
        )
    storage = re.search(r"\(sqlite3\.OperationalError\) (disk I/O error|database or disk is full)", text)
    if storage:  # MLflow's SQLite store could not write: a full disk, or a file-size limit
        return (
            f"the MLflow store could not be written ({storage.group(1)}): free space where it lives "
            "(paths.outputs, or logger.tracking_uri), then add resume=auto to the same command"
        )
    if "Error parsing override" in text or "mismatched input" in text:
        return "bad override syntax: " + " ".join(text.split())
    line = " ".join(text.split()) or type(exc).__name__
    return line if isinstance(exc, (ValueError, FileNotFoundError, KeyError)) else f"{type(exc).__name__}: {line}"


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM, with the signal that did it."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum

    def __reduce__(self) -> tuple[Any, tuple[int]]:  # from a worker process to its launcher
        return Interrupted, (self.signum,)


def run_cli(entry: Callable[[], Any], prog: str) -> NoReturn:
    """Run a Hydra entry point; on failure print `prog: error: <one line>` and exit 1."""
    from sweeplab.start_up import end_process, freeze_for_exit

    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        os.environ["_SWEEPLAB_USER_FULL_ERROR"] = "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    status = 0
    try:
        entry()
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"{prog}: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        status = 128 + signum  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
    except SystemExit as stop:
        status = _exit_status(stop.code)
    except BaseException as exc:  # noqa: BLE001 - the command's last line of defence
        if _debug_requested():
            freeze_for_exit()
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr)
        status = 1
    freeze_for_exit()
    end_process(status)


def _exit_status(code: Any) -> int:
    """The status ``sys.exit(code)`` ends Python with (a message is printed, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1
