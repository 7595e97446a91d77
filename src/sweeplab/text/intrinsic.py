"""The standard intrinsic scores of word vectors, computed by gensim on the
benchmark files its wheel ships, plus a picture and the vectors themselves.

- ``test/wordsim353_spearman``, ``test/simlex999_spearman``: Spearman's rank
  correlation between cosine similarity and human similarity judgements, over
  the pairs whose two words have vectors (``..._coverage``: that share).
- ``test/analogy_accuracy``: Google's analogy questions (a : b :: c : ?) by
  3CosAdd over the whole vocabulary, among the questions whose four words have
  vectors (``test/analogy_coverage``: that share of the 19,544).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

BENCHMARKS = {"wordsim353": "wordsim353.tsv", "simlex999": "simlex999.txt"}
ANALOGIES = "questions-words.txt"


def keyed_vectors(words: Sequence[str], vectors: np.ndarray):
    from gensim.models import KeyedVectors

    kv = KeyedVectors(vectors.shape[1])
    kv.add_vectors(list(words), np.asarray(vectors, dtype=np.float32))
    return kv


def scores(words: Sequence[str], vectors: np.ndarray) -> dict[str, float]:
    """Similarity and analogy scores (without the ``test/`` prefix)."""
    import warnings

    from sweeplab.text.corpora import gensim_data

    kv = keyed_vectors(words, vectors)
    out: dict[str, float] = {}
    with warnings.catch_warnings():  # scipy warns on a constant input when almost nothing is covered
        warnings.simplefilter("ignore")
        for name, file in BENCHMARKS.items():
            path = gensim_data(file)
            _, spearman, oov_percent = kv.evaluate_word_pairs(str(path), case_insensitive=True)
            out[f"{name}_spearman"] = float(spearman.statistic) if np.isfinite(spearman.statistic) else float("nan")
            out[f"{name}_coverage"] = 1.0 - float(oov_percent) / 100.0
        questions = gensim_data(ANALOGIES)
        total = sum(1 for line in questions.read_text(encoding="utf-8").splitlines() if line.strip() and not line.startswith(":"))
        accuracy, sections = kv.evaluate_word_analogies(str(questions), restrict_vocab=len(kv), case_insensitive=True)
        overall = next(s for s in sections if s["section"] == "Total accuracy")
        covered = len(overall["correct"]) + len(overall["incorrect"])
    out["analogy_accuracy"] = float(accuracy) if covered else float("nan")
    out["analogy_coverage"] = covered / total
    return out


def write_projection(words: Sequence[str], vectors: np.ndarray, path: Path, queries: int = 6, neighbours: int = 5) -> Path:
    """2-D PCA of a few frequent words and their nearest neighbours (cosine), one colour per query."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    # Frequent content words: skip the very top (the, of, ...) and punctuation.
    candidates = [i for i, w in enumerate(words) if w.isalpha() and len(w) > 3][10 : 10 + 20 * queries : 20] or [0]
    groups = []
    for q in candidates[:queries]:
        nearest = [int(i) for i in np.argsort(-(unit @ unit[q])) if i != q][:neighbours]
        groups.append([q, *nearest])
    chosen = sorted({i for g in groups for i in g})
    centred = unit[chosen] - unit[chosen].mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    xy = dict(zip(chosen, centred @ vt[:2].T))
    fig, ax = plt.subplots(figsize=(8, 6))
    for colour, group in zip(plt.cm.tab10.colors, groups):
        points = np.array([xy[i] for i in group])
        ax.scatter(points[1:, 0], points[1:, 1], color=colour, s=18)
        ax.scatter(points[:1, 0], points[:1, 1], color=colour, s=90, marker="*", label=words[group[0]])
        for i in group:
            ax.annotate(words[i], xy[i], fontsize=8, color=colour, xytext=(3, 3), textcoords="offset points")
    ax.set_title(f"{len(groups)} words (stars) and their {neighbours} nearest neighbours, PCA of unit vectors")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_vectors(words: Sequence[str], vectors: np.ndarray, path: Path) -> Path:
    """word2vec text format (a header ``count dim``), readable by ``model.vectors=<path>`` and gensim."""
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(f"{len(words)} {vectors.shape[1]}\n")
        for word, row in zip(words, vectors):
            handle.write(word + " " + " ".join(f"{v:.6g}" for v in row) + "\n")
    return path


def evaluate_vectors(words: Sequence[str], vectors: np.ndarray, out_dir: Path) -> tuple[dict[str, float], list[Path]]:
    """``test/`` scores and the files to log: ``embedding_projection.png``, ``vectors.txt``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics = {f"test/{k}": v for k, v in scores(words, vectors).items()}
    files = [write_projection(words, vectors, out_dir / "embedding_projection.png"), write_vectors(words, vectors, out_dir / "vectors.txt")]
    return metrics, files
