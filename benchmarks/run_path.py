"""How far one config travels through the package: the sweeplab files ``train.run`` enters
for the default experiment (one epoch, two batches), the moves between them (a call from
one file into another, counted once per ordered pair), and how many of those go up a
layer of the import-linter contract in pyproject.toml (a lower layer calling a higher
one back through an object it was handed).

    .venv/bin/python benchmarks/run_path.py            # this checkout
    PYTHONPATH=<an older src> python benchmarks/run_path.py   # the same figure for another version
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layers() -> dict[str, int]:
    """Top-level name (train, families, record...) -> its layer, 0 the highest."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    contract = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"][0]
    return {name.strip(): i for i, layer in enumerate(contract["layers"]) for name in layer.replace(":", "|").split("|")}


def main() -> None:
    import sweeplab
    from sweeplab.config import compose
    from sweeplab.train import run

    package = Path(sweeplab.__file__).parent
    entered: list[str] = []
    moves: set[tuple[str, str]] = set()

    def ours(frame) -> str | None:
        path = frame.f_code.co_filename
        return str(Path(path).relative_to(package)) if path.startswith(str(package)) else None

    def profile(frame, event, arg) -> None:
        if event != "call" or frame.f_code.co_name == "<module>" or (callee := ours(frame)) is None:
            return  # a module's own code runs once, on import: no move of the run
        caller, up = None, frame.f_back
        while up is not None and ((caller := ours(up)) is None or up.f_code.co_name == "<module>"):
            up = up.f_back
        if callee not in entered:
            entered.append(callee)
        if caller and caller != callee:
            moves.add((caller, callee))

    with tempfile.TemporaryDirectory() as tmp:
        overrides = [
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1",
            "+trainer.limit_test_batches=1",
            "print_config=false",
            f"paths.outputs={tmp}",
        ]
        cfg = compose(overrides, run_dir=Path(tmp) / "run")
        sys.setprofile(profile)
        try:
            run(cfg)
        finally:
            sys.setprofile(None)

    order = layers()

    def layer(file: str) -> int | None:
        return order.get(file.split("/")[0].removesuffix(".py"))

    upward = sorted((a, b) for a, b in moves if layer(a) is not None and layer(b) is not None and layer(b) < layer(a))
    print(f"sweeplab {sweeplab.__version__} at {package}")
    print(f"files entered by train.run: {len(entered)}")
    for file in entered:
        print(f"  {file}")
    print(f"moves between files (ordered pairs): {len(moves)}; up a layer: {len(upward)}")
    for a, b in upward:
        print(f"  up: {a} -> {b}")


if __name__ == "__main__":
    main()
