"""Configs and presets must ship in the wheel, not only in an editable checkout."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_carries_configs_and_composes_from_them(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # The packaging metadata builds without setuptools' deprecation and missing-package banners.
    output = build.stdout + build.stderr
    assert "is deprecated" not in output and "absent from" not in output, output[-3000:]
    wheel = next(tmp_path.glob("sweeplab-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for expected in (
        "sweeplab/conf/train.yaml",
        "sweeplab/conf/optimizer/lbfgs.yaml",
        "sweeplab/experiments/optimizers_digits.yaml",
        "hydra_plugins/sweeplab_optuna/optuna_sweeper.py",
    ):
        assert expected in names
    assert "hydra_plugins/__init__.py" not in names  # a namespace package, shared with the other Hydra plugins
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    # A fresh interpreter that sees only the unpacked wheel's sweeplab (not the checkout).
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        # Hydra's own plugin scan finds the sweeper in the installed wheel (before sweeplab registers it)
        "from hydra.core.plugins import Plugins; from hydra.plugins.sweeper import Sweeper;"
        "found = [p for p in Plugins.instance().discover(Sweeper) if p.__name__ == 'OptunaSweeper'];"
        "import sweeplab, sweeplab.config as c;"
        "assert sweeplab.__file__.startswith(sys.argv[1]), sweeplab.__file__;"
        "cfg = c.compose(['experiment=schedulers_digits', 'optimizer=rprop']);"
        "print(cfg.optimizer._target_, cfg.experiment_name);"
        "print(found[0].__module__, sys.modules[found[0].__module__].__file__.startswith(sys.argv[1]))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(site)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["torch.optim.Rprop", "schedulers_digits", "hydra_plugins.sweeplab_optuna.optuna_sweeper", "True"]


def test_every_config_group_is_a_listed_package() -> None:
    """A new conf/ group folder must be listed in pyproject.toml, or the wheel build warns (and may drop it)."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    groups = {f"sweeplab.conf.{d.name}" for d in (ROOT / "conf").iterdir() if d.is_dir() and any(d.glob("*.yaml"))}
    assert groups <= listed, f"add to [tool.setuptools] packages: {sorted(groups - listed)}"
