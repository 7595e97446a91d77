"""What a run shows and keeps: the config tree at start, train.log with all it printed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import FAST, cli, store_overrides, train_in_process


def test_config_tree_is_printed_unless_print_config_is_false(store, tmp_path: Path, capsys) -> None:
    train_in_process([*FAST, "logger=none", *store_overrides(store)], tmp_path / "a")
    shown = capsys.readouterr().out
    assert "config\n├── data" in shown and "DigitsDataModule" in shown and "└── root" in shown
    train_in_process([*FAST, "logger=none", "print_config=false", *store_overrides(store)], tmp_path / "b")
    assert "├── data" not in capsys.readouterr().out
    # The same text is in each run's train.log.
    assert "├── data" in (tmp_path / "a" / "train.log").read_text()
    assert "├── data" not in (tmp_path / "b" / "train.log").read_text()


@pytest.mark.slow
def test_train_log_holds_what_the_run_printed_warnings_included_and_no_secret(tmp_path: Path) -> None:
    result = cli(
        [
            "trainer.max_epochs=2",
            "+callbacks.warn._target_=signal_callbacks.WarnAtFitStart",
            "+tags.api_token=s3cret-value",
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(Path(__file__).parent), "TERM": "xterm", "FORCE_COLOR": "1"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    log = next(tmp_path.glob("outputs/runs/*/*/train.log")).read_text()
    for expected in ("├── data", "a warning raised during the run", "test/f1", "run folder:", "MLflow run "):
        assert expected in log, expected
    assert "s3cret-value" not in log and "s3cret-value" not in result.stdout + result.stderr
    assert "\x1b[" not in log and "\r" not in log  # colours and progress-bar redraws stay on the terminal
    assert os.path.getsize(next(tmp_path.glob("outputs/mlartifacts/*/artifacts/train.log"))) > 0  # and in MLflow


def test_a_run_refused_during_set_up_gives_back_the_console_and_its_folder(store, tmp_path: Path) -> None:
    import sys

    from sweeplab.record import liveness

    streams = sys.stdout, sys.stderr
    with pytest.raises(Exception, match="no such file"):
        train_in_process(
            ["data=csv", f"data.path={tmp_path / 'missing.csv'}", "data.target=y", *FAST, *store_overrides(store)], tmp_path / "run"
        )
    assert (sys.stdout, sys.stderr) == streams  # train.log's copy has stopped
    assert str(tmp_path / "run") not in liveness._held  # the folder's lock is released


def test_a_missing_data_file_is_said_before_any_config_tree(tmp_path: Path) -> None:
    """Check, then print: the error is not the last of a hundred lines of config."""
    from conftest import cli

    result = cli(["data=csv", f"data.path={tmp_path / 'missing.csv'}", "data.target=y"], cwd=tmp_path)
    assert result.returncode == 1
    assert "no such file" in result.stderr.strip().splitlines()[-1]
    assert "optimizer" not in result.stdout and len(result.stdout.splitlines()) < 5, result.stdout  # no tree was printed
