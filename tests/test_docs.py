"""The documentation site builds, strictly and offline: every page in the nav, every
link and picture found (what `make docs` runs and CI runs through this test)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import warm_processes

ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_build_strict_with_every_picture(tmp_path: Path) -> None:
    mkdocs = Path(sys.executable).with_name("mkdocs")
    built = subprocess.run(
        [str(mkdocs), "build", "--strict", "--site-dir", str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr[-3000:]
    index = (tmp_path / "site" / "index.html").read_text()
    for picture in ("confusion_matrix.png", "compare_plot.png", "policy_map.png", "som_maps.png", "mlflow_ui.png"):
        assert f"images/{picture}" in index and (tmp_path / "site" / "images" / picture).stat().st_size > 5000, picture
    pages = {p.stem for p in (ROOT / "docs").glob("*.md")}
    assert {
        "getting-started",
        "configs",
        "families",
        "sweeps",
        "fused-sweeps",
        "cluster",
        "models",
        "reliability",
        "benchmarks",
        "architecture",
    } <= pages
    for page in pages - {"index"}:
        assert (tmp_path / "site" / page / "index.html").is_file(), page
    assert "fonts.googleapis" not in index  # nothing fetched when the page is read offline


def test_the_readme_links_every_page_and_stays_short() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 120
    for page in sorted((ROOT / "docs").glob("*.md")):
        if page.stem != "index":
            assert f"(docs/{page.name})" in readme, page.name


def _documented_lines() -> list[tuple[str, str]]:
    """Every command line of the docs' shell blocks (README and docs/), continuations joined and
    comments dropped, as (page, line), in the order a reader meets them."""
    import re

    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        fence, pending = None, ""
        for line in page.read_text().splitlines():
            if line.startswith("```"):
                fence = None if fence is not None else line[3:].strip()
                continue
            if fence not in ("bash", "sh"):
                continue
            text = pending + re.split(r"\s+#", line, maxsplit=1)[0].strip()
            if text.endswith("\\"):
                pending = text[:-1] + " "
                continue
            pending = ""
            if text and "..." not in text:
                found.append((page.name, text))
    return found


def _documented_commands() -> list[tuple[str, list[str]]]:
    """Every ``sweeplab-train`` command in the docs' shell blocks, as (page, arguments)."""
    return [
        (page, _as_the_shell_splits(text.removeprefix("sweeplab-train")))
        for page, text in _documented_lines()
        if text.startswith("sweeplab-train")
    ]


def _as_the_shell_splits(arguments: str) -> list[str]:
    """The arguments bash would pass, $(...) and $PWD expanded (python: this interpreter), run from the checkout."""
    script = "printf '%s\\0' " + arguments.replace("$(python ", f"$({shlex.quote(sys.executable)} ")
    words = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, check=True, env={**os.environ, "PWD": str(ROOT)}
    )
    return [w for w in words.stdout.split("\0") if w]


def test_every_documented_training_command_composes_and_passes_the_config_checks(tmp_path: Path) -> None:
    """What a reader types composes (groups, options, keys, Hydra's grammar) and passes the checks a
    run makes before it starts; a sweep is checked at its first point. Files the reader brings
    (their own CSV, vectors, weights) are not looked for here."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sweeplab.config import check_config, compose

    parser = OverridesParser.create()
    commands = _documented_commands()
    assert len(commands) > 40
    failures = []
    for page, args in commands:
        overrides = [a for a in args if a != "-m" and not a.startswith(("hydra.", "hydra/"))]
        first = []
        for override in parser.parse_overrides(overrides):
            if override.is_sweep_override():
                value = next(iter(override.sweep_string_iterator()))
                first.append(f"{override.get_key_element()}={value}")
            else:
                first.append(override.input_line)
        try:
            check_config(compose(first, run_dir=tmp_path / "run"))
        except Exception as exc:  # noqa: BLE001 - every failing command is listed at once
            failures.append(f"{page}: sweeplab-train {' '.join(args)}: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    assert not failures, "\n".join(failures)


# Lines that read an input the docs ship (docs/examples/) or have the reader make first.
NAMES_A_MADE_INPUT = ("docs/examples/", "outputs/", "test_glove.txt", "grunfeld")
# Capped to a few batches: what is checked is that the command runs as written, not what it learns.
QUICK_CAPS = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=2", "logger.log_model=false"]
# Lines that need the internet or a file only a download makes: offline, one line naming the way.
OFFLINE_ANSWER = {"data=cifar10": "data.download=true", "IMAGENET1K_V1": "model.download_weights=true"}


@pytest.mark.slow
def test_every_documented_command_that_uses_an_example_input_runs_as_written(tmp_path: Path) -> None:
    """The inputs the docs ship (docs/examples/reviews.csv) or make first (a tiny BERT folder, an image
    folder, a .pth, a CSV from statsmodels, gensim's GloVe sample) exist, and every command that
    reads them runs from a fresh checkout's folder; a command that needs a download says so offline."""
    (tmp_path / "docs").symlink_to(ROOT / "docs")
    (tmp_path / "outputs").mkdir()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PWD=str(tmp_path), HF_HUB_OFFLINE="1")
    env = warm_processes.shell_env(env)  # the shell's sweeplab commands: forked from a process imported offline
    makers = [(page, text) for page, text in _documented_lines() if text.startswith("python ")]
    users = [
        (page, text)
        for page, text in _documented_lines()
        if text.startswith(("sweeplab-train", "sweeplab compare")) and any(name in text for name in NAMES_A_MADE_INPUT)
    ]
    assert len(makers) >= 4 and len(users) >= 8, (makers, users)
    failures = []
    for page, text in [*makers, *users]:
        command = text.replace("python ", f"{shlex.quote(sys.executable)} ", 1) if text.startswith("python ") else text
        if text.startswith("sweeplab-train"):
            command += " " + " ".join(QUICK_CAPS)
        ran = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
        offline = next((way for needs, way in OFFLINE_ANSWER.items() if needs in text), None)
        said = (ran.stderr.strip().splitlines() or [""])[-1]
        if offline and ran.returncode != 0:
            if offline not in said:
                failures.append(f"{page}: {text}: offline, said {said!r}, not the way ({offline})")
        elif ran.returncode != 0:
            failures.append(f"{page}: {text}: exit {ran.returncode}: {said}")
        elif text.startswith("sweeplab-train") and "test/" not in ran.stdout:
            failures.append(f"{page}: {text}: no test scores printed")
    assert not failures, "\n".join(failures)


# Where the docs' other commands are run: a server that stays up is started by its own tests.
RUN_ELSEWHERE = {
    "sweeplab ui": "test_reliability.py starts it (loopback, a port in use); test_server.py opens a sweep's page in Chromium",
    "mlflow ui": "what sweeplab ui runs on the local store",
    "mlflow models serve": "test_mlflow_models.py serves a logged model and posts rows to it",
    "curl": "test_mlflow_models.py posts rows to a served model",
    "make": "CI runs make test; make train is sweeplab-train with the default experiment",
    "source": "a shell built-in for the reader's terminal",
}


@pytest.mark.slow
def test_every_documented_sweeplab_command_runs_on_the_store_its_page_makes(tmp_path: Path) -> None:
    """The pages' `sweeplab` and `sweeplab-eval` lines, with their placeholders (<sweep id>,
    <mlflow run id>, <run folder>) filled from a store made by the pages' own sweeps: each exits 0."""
    import mlflow

    from conftest import runs_of

    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", PWD=str(tmp_path))
    env = warm_processes.shell_env(env)  # the shell's sweeplab commands: forked from the warm process
    caps = [*QUICK_CAPS[:3], "print_config=false"]
    for sweep in (
        ["-m", "optimizer=adam,sgd", "seed=1,2"],
        ["experiment=optimizers_digits", "optimizer=adam,sgd", "seed=1,2", "logger.log_model=false"],
    ):
        made = subprocess.run(["sweeplab-train", *sweep, *caps], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
        assert made.returncode == 0, made.stderr[-2000:]
    store = f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    runs = runs_of(store, "sweeplab")
    mlflow.set_tracking_uri(store)
    filled = {
        "<sweep id>": runs["tags.sweeplab.sweep_id"].iloc[0],
        "<mlflow run id>": runs.run_id.iloc[0],
        "<run folder>": runs["tags.sweeplab.run_dir"].iloc[0],
        "[--close]": "--close",
    }
    lines = [
        (page, text)
        for page, text in _documented_lines()
        if text.startswith(("sweeplab ", "sweeplab-eval")) and not any(name in text for name in NAMES_A_MADE_INPUT)
    ]
    elsewhere = [text for _, text in _documented_lines() if text.startswith(tuple(RUN_ELSEWHERE))]
    assert len(lines) >= 10 and elsewhere, (lines, elsewhere)
    failures = []
    for page, text in lines:
        if text.startswith(tuple(RUN_ELSEWHERE)):
            continue
        for placeholder, value in filled.items():
            text = text.replace(placeholder, str(value))
        assert "<" not in text, f"{page}: a placeholder this test does not fill: {text}"
        ran = subprocess.run(["bash", "-c", text], cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
        if ran.returncode != 0:
            failures.append(f"{page}: {text}: exit {ran.returncode}: {(ran.stderr.strip().splitlines() or [''])[-1]}")
    assert not failures, "\n".join(failures)
