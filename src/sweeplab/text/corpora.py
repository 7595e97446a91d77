"""The real text that comes with an installed package (gensim's test data: a news
corpus, movie reviews, word benchmarks), for data sets and benchmarks that need
no download."""

from __future__ import annotations

from pathlib import Path


def gensim_data(name: str) -> Path:
    """A file of the test data gensim's wheel ships (real text and benchmarks, offline).
    Found without importing ``gensim.test.utils``, which builds a toy corpus on import."""
    from importlib.util import find_spec

    spec = find_spec("gensim")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the text data sets come with gensim: pip install gensim")
    return Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data" / name
