"""The package's layout keeps its promises: each layer imports only from those below it,
no two modules import each other in a circle (lazy imports count), every package says
what lives in it, and what an earlier version saved (configs, run identities, logged
models) still works after the modules moved."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import runs_of, store_overrides, train_in_process

ROOT = Path(__file__).resolve().parents[1]
SAVED = Path(__file__).parent / "data" / "saved_0_1_0"  # written by sweeplab 0.1.0, before the move


def test_each_layer_imports_only_from_the_layers_below_it() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--config", str(ROOT / "pyproject.toml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 kept, 0 broken" in result.stdout


def _circles(graph) -> set[tuple[str, str]]:
    """Pairs of modules (package __init__s aside) that reach each other through imports."""
    modules = {m for m in graph.modules if not graph.find_children(m)}
    return {
        tuple(sorted((a, b)))
        for a in modules
        for b in graph.find_modules_directly_imported_by(a) & modules
        if graph.chain_exists(importer=b, imported=a, as_packages=False)
    }


def test_no_two_modules_import_each_other_in_a_circle() -> None:
    """Layers may hold packages that import each other (data and text); their modules may not."""
    import grimp

    graph = grimp.build_graph("sweeplab")
    assert len(graph.modules) > 60
    assert not _circles(graph), f"modules in a circle: {sorted(_circles(graph))}"
    graph.add_import(importer="sweeplab.record.tags", imported="sweeplab.record.run")  # the check is not vacuous
    assert ("sweeplab.record.run", "sweeplab.record.tags") in _circles(graph)


def test_every_package_says_in_a_line_what_lives_there() -> None:
    import ast

    for init in sorted((ROOT / "src" / "sweeplab").rglob("__init__.py")):
        docstring = ast.get_docstring(ast.parse(init.read_text()))
        assert docstring and docstring.splitlines()[0].strip(), f"{init.relative_to(ROOT)} has no docstring"


def test_the_architecture_page_names_every_package() -> None:
    section = (ROOT / "docs" / "architecture.md").read_text()
    packages = sorted(p.parent.name for p in (ROOT / "src" / "sweeplab").glob("*/__init__.py"))
    assert packages, "no packages found"
    missing = [p for p in packages if f"{p}/" not in section]
    assert not missing, f"docs/architecture.md does not show: {missing}"


def test_configs_composed_now_keep_the_identity_version_0_1_0_gave_them(tmp_path: Path) -> None:
    """skip_finished and resume=auto find runs by this hash: a class that moved in the package
    must not make every earlier run a stranger (the default callbacks name one)."""
    from sweeplab.config import compose
    from sweeplab.record.identity import config_hash

    saved = json.loads((SAVED / "config_hashes.json").read_text())
    assert len(saved) >= 3
    for name, entry in saved.items():
        assert config_hash(compose(entry["overrides"], run_dir=tmp_path / name)) == entry["config_hash"], name


def test_a_config_saved_by_0_1_0_names_classes_where_they_are_now() -> None:
    from hydra.utils import get_class, get_method

    from sweeplab.record.identity import upgrade_targets

    old = OmegaConf.load(SAVED / "config.yaml")
    assert old.callbacks.precise_bn._target_ == "sweeplab.callbacks.PreciseBatchNorm"  # as it was saved
    new = upgrade_targets(old)
    assert new.callbacks.precise_bn._target_ == "sweeplab.families.torch.callbacks.PreciseBatchNorm"
    assert new.scheduler.lr_lambda._target_ == "sweeplab.families.torch.schedules.linear_warmup"  # nested too
    get_class(new.callbacks.precise_bn._target_)
    get_method(new.scheduler.lr_lambda._target_)
    assert new.data == old.data and new.model == old.model  # nothing else changes


@pytest.mark.slow
def test_sweeplab_eval_rebuilds_a_run_from_a_config_saved_by_0_1_0(store, tmp_path: Path) -> None:
    """The run folder of a 0.1.0 run: its config.yaml names sweeplab.schedules.linear_warmup."""
    overrides = ["data=wine", "trainer.max_epochs=2", "scheduler=lambda"]
    trained = train_in_process([*overrides, *store_overrides(store)], tmp_path / "run")
    run = runs_of(store["uri"]).iloc[0]
    saved = json.loads((SAVED / "config_hashes.json").read_text())["wine_lambda_trained"]
    assert saved["overrides"] == overrides and run["tags.sweeplab.config_hash"] == saved["config_hash"]
    (tmp_path / "run" / "config.yaml").write_text((SAVED / "config.yaml").read_text())
    result = subprocess.run(
        [str(Path(sys.executable).with_name("sweeplab-eval")), str(tmp_path / "run" / "checkpoints" / "best.ckpt")],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{trained['test/accuracy']:.6f}" in result.stdout  # the same test score, from the same weights


@pytest.mark.slow
def test_a_model_logged_before_the_flavour_moved_still_loads(store, tmp_path: Path) -> None:
    """MLmodel files name their loader module: those of 0.1.0 say sweeplab.serving."""
    import mlflow
    import pandas as pd
    from sklearn.datasets import load_iris

    train_in_process([*store_overrides(store), "trainer.max_epochs=1", "callbacks=none", "data=iris"], tmp_path / "run")
    run = runs_of(store["uri"]).iloc[0]
    folder = Path(mlflow.artifacts.download_artifacts(f"runs:/{run.run_id}/model", dst_path=str(tmp_path / "model")))
    mlmodel = (folder / "MLmodel").read_text()
    assert "loader_module: sweeplab.record.model" in mlmodel
    (folder / "MLmodel").write_text(mlmodel.replace("loader_module: sweeplab.record.model", "loader_module: sweeplab.serving"))
    bunch = load_iris()
    answer = mlflow.pyfunc.load_model(str(folder)).predict(pd.DataFrame(bunch.data[:3], columns=bunch.feature_names))
    assert set(answer["predicted_class"]) <= {"setosa", "versicolor", "virginica"} and len(answer) == 3
