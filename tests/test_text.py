"""Text: tokenizers, text data modules, word vectors (Word2Vec, GloVe), pre-trained
vectors in a classifier, BERT, and their errors; checked against scikit-learn,
scipy and hand computations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from sweeplab.data.base import Task
from sweeplab.data.text import CorpusDataModule, SentimentDataModule, TextCsvDataModule, TextFolderDataModule
from sweeplab.text.corpora import gensim_data
from sweeplab.text.tokenizers import PAD_ID, SPECIALS, UNK_ID, WordTokenizer, build_tokenizer, words

from conftest import FAST, cli, runs_of, saved_predictions, store_overrides, train_in_process, train_listing_imports

REVIEWS = [
    ("a wonderful, moving film", "pos"),
    ("dull and tedious", "neg"),
    ("wonderful acting", "pos"),
    ("tedious plot , dull script", "neg"),
    ("moving and funny", "pos"),
    ("a dull mess", "neg"),
] * 4


def write_reviews(path: Path, rows=REVIEWS, text="review", target="label") -> Path:
    import pandas as pd

    pd.DataFrame({text: [r[0] for r in rows], target: [r[1] for r in rows], "stars": range(len(rows))}).to_csv(path, index=False)
    return path


def write_folder(root: Path, rows=REVIEWS) -> Path:
    for i, (text, label) in enumerate(rows):
        (root / label).mkdir(parents=True, exist_ok=True)
        (root / label / f"{i:03d}.txt").write_text(text)
    return root


# -- tokenizers -------------------------------------------------------------------
def test_word_tokenizer_learns_only_from_training_texts_and_min_freq() -> None:
    assert words("It's GREAT, isn't it?") == ["it's", "great", ",", "isn't", "it", "?"]
    tok = WordTokenizer(["the cat sat", "the dog sat", "a bird"], min_freq=2)
    assert tok.vocabulary == [*SPECIALS, "sat", "the"]  # by count, then alphabetically; 'cat' seen once
    assert tok.encode(["The zebra sat"], max_length=10) == [[tok.index["the"], UNK_ID, tok.index["sat"]]]
    assert tok.encode(["the the the the"], max_length=2) == [[tok.index["the"]] * 2]


@pytest.mark.parametrize("kind", ["wordpiece", "bpe"])
def test_subword_tokenizers_are_trained_on_the_training_split(kind: str) -> None:
    texts = [t for t, _ in REVIEWS]
    tok = build_tokenizer(kind, texts, vocab_size=60)
    assert tok.vocabulary[: len(SPECIALS)] == list(SPECIALS) and len(tok.vocabulary) <= 60
    ids = tok.encode(["wonderful moving film", "unseenword"], max_length=16)
    assert all(0 < i < len(tok.vocabulary) for row in ids for i in row)
    assert "".join(tok.tokens("wonderful")).replace("##", "") == "wonderful"


def test_tokenizer_choices_are_checked() -> None:
    with pytest.raises(ValueError, match=r"data.tokenizer='spacy': choose one of auto, word, wordpiece, bpe, pretrained"):
        build_tokenizer("spacy", ["a b"])
    with pytest.raises(
        ValueError, match="data.tokenizer=word with model.weights=/m: a pre-trained model reads the ids of its own tokenizer"
    ):
        build_tokenizer("word", ["a b"], pretrained="/m")
    with pytest.raises(ValueError, match="data.tokenizer=pretrained needs a pre-trained model"):
        build_tokenizer("pretrained", ["a b"])


# -- data modules -----------------------------------------------------------------
def test_sentiment_is_pang_lee_polarity_split_and_padded() -> None:
    dm = SentimentDataModule(seed=0)
    dm.setup()
    assert dm.task is Task.BINARY and dm.class_names == ["neg", "pos"]
    sizes = {k: len(v[1]) for k, v in dm.splits.items()}
    assert sum(sizes.values()) == 200 and sizes["test"] == 30
    x, y = dm.arrays("train")
    assert x.dtype == np.int64 and x.shape[1] == dm.input_shape[0] <= 64
    assert (x[:, 0] != PAD_ID).all()  # no empty texts
    # The vocabulary is the training split's: some test words are unknown.
    test_ids = dm.arrays("test")[0]
    assert (test_ids == UNK_ID).any() and set(dm.tokenizer.vocabulary) >= {w for t in dm.texts["train"] for w in words(t)}


def test_text_csv_and_text_folder_read_the_same_reviews(tmp_path: Path) -> None:
    from_csv = TextCsvDataModule(path=str(write_reviews(tmp_path / "r.csv")), text="review", target="label", seed=1)
    from_folder = TextFolderDataModule(root=str(write_folder(tmp_path / "reviews")), seed=1)
    for dm in (from_csv, from_folder):
        dm.setup()
        assert dm.class_names == ["neg", "pos"] and dm.task is Task.BINARY
        assert sum(len(v[1]) for v in dm.splits.values()) == len(REVIEWS)
    assert str(from_folder.ids["test"][0]).endswith(".txt")  # a sample's id is its file


@pytest.mark.parametrize(
    "rows,column,message",
    [
        (
            [("good", "pos"), ("", "neg"), ("bad", "neg")] * 3,
            "review",
            r"data.text='review': 3 empty text\(s\) \(row 1, row 4, row 7\); drop or fill them",
        ),
        (REVIEWS, "stars", r"data.text='stars' holds int values, not text \(row 0, row 1, row 2, ...\); point it at a text column"),
        ([("good", "pos"), ("fine", "pos")] * 3, "review", r"every label is 'pos'; a classifier needs at least 2 classes"),
        (REVIEWS, "body", r"data.text='body': no such column in .*; columns: review, label, stars"),
    ],
    ids=["empty-text", "numbers-not-text", "one-class", "no-column"],
)
def test_text_csv_errors_name_the_value(rows, column: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        TextCsvDataModule(path=str(write_reviews(tmp_path / "r.csv", rows)), text=column, target="label")


def test_text_folder_with_one_class_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data.root=.*: found 1 class folder\(s\) \(pos\); needs one sub-folder per class"):
        TextFolderDataModule(root=str(write_folder(tmp_path / "r", [("good", "pos")] * 4)))


# -- word vectors -----------------------------------------------------------------
def test_cooccurrence_counts_each_pair_once_per_distance() -> None:
    from sweeplab.text.glove import cooccurrence

    m = cooccurrence([["a", "b", "c", "a"]], ["a", "b", "c"], window=2).toarray()
    # a-b at distance 1 (twice: a b and ... no: 'a b' once, 'c a' gives a-c at 1); a-c at 2 ('a _ c') and 1 ('c a')
    expected = np.array([[0.0, 1.0 + 0.5, 0.5 + 1.0], [1.5, 0.0, 1.0], [1.5, 1.0, 0.0]])
    assert np.allclose(m, expected) and np.allclose(m, m.T)


def test_glove_objective_is_the_papers_weighted_least_squares() -> None:
    from types import SimpleNamespace

    from sweeplab.text.glove import GloVe

    torch.manual_seed(0)
    g = GloVe((3,), 1, SimpleNamespace(vocabulary=["a", "b", "c"]), vector_size=4, x_max=10.0, alpha=0.75)
    x = torch.tensor([[0.0, 1.0, 5.0], [2.0, 0.0, 20.0]])
    y = torch.log(x[:, 2])
    w, c = g.words.weight.detach(), g.contexts.weight.detach()
    by_hand = []
    for (i, j, count), log_count in zip(x.tolist(), y.tolist()):
        i, j = int(i), int(j)
        pred = float(w[i] @ c[j]) + float(g.word_bias.weight[i, 0].detach()) + float(g.context_bias.weight[j, 0].detach())
        by_hand.append(min(1.0, (count / 10.0) ** 0.75) * (pred - log_count) ** 2)
    with torch.no_grad():
        assert float(g.objective(g(x), x, y)) == pytest.approx(np.mean(by_hand), rel=1e-5)


def test_intrinsic_scores_match_scipy_spearman_on_the_covered_pairs() -> None:
    from scipy.stats import spearmanr

    from sweeplab.text.intrinsic import scores

    pairs = [line.split("\t") for line in gensim_data("wordsim353.tsv").read_text().splitlines() if line and not line.startswith("#")]
    vocab = sorted({w.lower() for a, b, _ in pairs[:120] for w in (a, b)})
    vectors = np.random.default_rng(0).normal(size=(len(vocab), 16)).astype(np.float32)
    got = scores(vocab, vectors)
    index = {w: i for i, w in enumerate(vocab)}
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    covered = [(a.lower(), b.lower(), float(s)) for a, b, s in pairs if a.lower() in index and b.lower() in index]
    cosine = [float(unit[index[a]] @ unit[index[b]]) for a, b, _ in covered]
    assert got["wordsim353_spearman"] == pytest.approx(spearmanr(cosine, [s for *_, s in covered]).statistic, abs=1e-6)
    assert got["wordsim353_coverage"] == pytest.approx(len(covered) / len(pairs))
    assert 0 <= got["analogy_coverage"] < 0.05


def test_word2vec_on_lee_beats_random_vectors_on_wordsim() -> None:
    from sweeplab.text.intrinsic import scores
    from sweeplab.text.word2vec import Word2Vec

    corpus = CorpusDataModule()
    model = Word2Vec(sg=1, vector_size=100, epochs=20, random_state=1).fit(corpus.sentences, corpus.vocabulary)
    trained = scores(model.vocabulary_, model.vectors_)["wordsim353_spearman"]
    rng = np.random.default_rng(0)
    random = [scores(model.vocabulary_, rng.normal(size=model.vectors_.shape))["wordsim353_spearman"] for _ in range(5)]
    assert trained > 0.2 and trained - np.mean(random) > 0.15, (trained, random)


def test_vectors_files_in_glove_and_word2vec_format(tmp_path: Path) -> None:
    from sweeplab.text.intrinsic import write_vectors
    from sweeplab.text.vectors import read_vectors

    found, dim, fmt = read_vectors(gensim_data("test_glove.txt"), {"the", "of", "nosuchword"})
    assert (dim, fmt) == (50, "glove") and set(found) == {"the", "of"}
    assert found["the"][:2] == pytest.approx([0.418, 0.24968])
    path = write_vectors(["alpha", "beta"], np.array([[1.0, 2.0], [3.0, 4.5]]), tmp_path / "v.txt")
    found, dim, fmt = read_vectors(path, {"alpha", "beta"})
    assert (dim, fmt) == (2, "word2vec") and found["beta"].tolist() == [3.0, 4.5]


@pytest.mark.parametrize(
    "content,message",
    [
        (
            "the 0.1 0.2 0.3\nof 0.1 0.2\n",
            r"line 2 has 2 numbers where the file's vectors have 3; every vector must have the same dimension",
        ),
        ("the\nof\n", r"line 1 has a word and no numbers; expected word2vec or GloVe text format"),
        (b"\x80\x81binary\xff", r"not a text file; expected word2vec or GloVe text format"),
        ("the 0.1 zero\n", r"line 1 is not a word followed by numbers"),
    ],
    ids=["ragged", "no-numbers", "binary", "not-numbers"],
)
def test_bad_vectors_files_are_one_line(content, message: str, tmp_path: Path) -> None:
    from sweeplab.text.vectors import read_vectors

    path = tmp_path / "v.txt"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=message):
        read_vectors(path, {"the", "of"})


def test_pretrained_vectors_fill_the_embedding_and_coverage_is_logged(store, tmp_path: Path, capsys) -> None:
    metrics = train_in_process(
        [
            "data=sentiment",
            "model=embedding_bag",
            f"model.vectors={gensim_data('test_glove.txt')}",
            "model.freeze_embeddings=true",
            "model.embedding_dim=7",
            *FAST,
            *store_overrides(store),
        ],
        tmp_path / "run",
    )
    out = capsys.readouterr().out
    assert "of the 1,0" in out or "-word vocabulary found (dim 50)" in out
    run = runs_of(store["uri"]).iloc[0]
    coverage = run["metrics.vectors_coverage"]
    assert 0 < coverage < 1 and f"{coverage:.1%}" in out
    assert "test/f1" in metrics


def test_text_classifier_metrics_equal_scikit_learns(store, tmp_path: Path) -> None:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    metrics = train_in_process(
        ["data=sentiment", "model=embedding_bag", "trainer.max_epochs=3", "callbacks=none", *store_overrides(store)], tmp_path / "run"
    )
    y_true, y_pred = saved_predictions(tmp_path / "run")
    assert len(y_true) == 30
    assert metrics["test/accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert metrics["test/f1"] == pytest.approx(f1_score(y_true, y_pred, zero_division=0))
    assert metrics["test/precision"] == pytest.approx(precision_score(y_true, y_pred, zero_division=0))
    assert metrics["test/recall"] == pytest.approx(recall_score(y_true, y_pred, zero_division=0))


def test_tfidf_baseline_equals_scikit_learns_own_vectorizer() -> None:
    """TF-IDF over our token ids is scikit-learn's TfidfVectorizer over the same words."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from sweeplab.text.tfidf import TfidfLogisticRegression

    dm = SentimentDataModule(seed=3, max_length=1000)
    dm.setup()
    ours = TfidfLogisticRegression(random_state=0).fit(*dm.arrays("train")).predict_proba(dm.arrays("test")[0])
    vectorizer = TfidfVectorizer(analyzer=words, sublinear_tf=True)
    reference = LogisticRegression(max_iter=1000, random_state=0).fit(vectorizer.fit_transform(dm.texts["train"]), dm.arrays("train")[1])
    assert np.allclose(ours, reference.predict_proba(vectorizer.transform(dm.texts["test"])), atol=1e-6)


@pytest.mark.parametrize(
    "overrides,message",
    [
        (
            ["data=sentiment", "model=mlp"],
            r"model=\w+ does not read text; on data=sentiment use model=embedding_bag, bert or tfidf_logistic_regression",
        ),
        (["data=sentiment", "model=knn"], r"model=\w+ does not read text"),
        (["data=corpus", "model=mlp"], "data=corpus is unlabelled text for word vectors: use model=word2vec or model=glove"),
        (["data=digits", "model=glove"], r"model=\w+ learns word vectors from unlabelled text: use data=corpus"),
        (["data=sentiment", "model=word2vec"], r"model=\w+ learns word vectors from unlabelled text: use data=corpus"),
        (["data=digits", "model=bert"], "model=bert reads text: use data=sentiment, text_csv or text_folder"),
        (["data=digits", "model=embedding_bag", "model.vectors=glove"], "model.vectors=glove: word vectors need text data"),
        (["data=corpus", "model=glove", "loss=mse"], "GloVe trains on its own objective; drop loss=MSELoss"),
    ],
    ids=["mlp-on-text", "knn-on-text", "corpus-mlp", "glove-digits", "word2vec-labelled", "bert-digits", "vectors-on-table", "glove-loss"],
)
def test_models_that_cannot_read_the_data_are_refused(overrides: list[str], message: str, store, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        train_in_process([*overrides, *FAST, *store_overrides(store)], tmp_path / "run")


# -- BERT ---------------------------------------------------------------------------
def tiny_bert(folder: Path, with_tokenizer: bool = True) -> Path:
    """A 1-layer BERT and a WordPiece tokenizer over the sentiment words, as save_pretrained writes
    them: the docs' own maker (docs/examples/make_tiny_bert.py), so what the docs tell a reader to
    run is what these tests train on."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_tiny_bert", Path(__file__).parent.parent / "docs" / "examples" / "make_tiny_bert.py"
    )
    maker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(maker)
    return maker.make_tiny_bert(folder, with_tokenizer)


def test_bert_from_scratch_builds_on_the_datas_vocabulary(store, tmp_path: Path) -> None:
    metrics = train_in_process(
        [
            "data=sentiment",
            "data.tokenizer=wordpiece",
            "data.vocab_size=300",
            "model=bert",
            "model.hidden_size=16",
            "model.num_layers=1",
            "model.freeze_backbone=false",
            *FAST,
            *store_overrides(store),
        ],
        tmp_path / "run",
    )
    assert {"test/accuracy", "test/f1"} <= set(metrics)


@pytest.mark.slow
def test_bert_fine_tunes_a_local_save_pretrained_folder_through_the_cli(tmp_path: Path) -> None:
    weights = tiny_bert(tmp_path / "tiny-bert")
    result = cli(
        [
            "data=sentiment",
            "model=bert",
            f"model.weights={weights}",
            "trainer.max_epochs=2",
            "callbacks.progress_bar=null",
            "param_groups=[{params: backbone, lr: 1e-4}]",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"encoder and its tokenizer loaded from {weights}" in result.stdout
    run = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").iloc[0]
    assert run["status"] == "FINISHED" and run["params.data.tokenizer"] == "auto"
    assert 0 <= run["metrics.test/accuracy"] <= 1
    # sweeplab-eval rebuilds the encoder from the folder's config and the data's ids with the same tokenizer.
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("sweeplab-eval")
    evaluated = subprocess.run(
        [str(exe), run["run_id"], "--store", f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    again = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").iloc[0]
    assert again["metrics.eval/test/accuracy"] == pytest.approx(run["metrics.test/accuracy"])
    assert again["metrics.eval/test/f1"] == pytest.approx(run["metrics.test/f1"])
    # The pre-trained tokenizer's ids ([CLS] first) went into the encoder: the same folder tokenizes the test texts.
    from transformers import AutoTokenizer

    first = AutoTokenizer.from_pretrained(str(weights))("simplistic , silly and tedious .")["input_ids"]
    assert first[0] == 2 and first[-1] == 3


@pytest.mark.slow
@pytest.mark.parametrize(
    "case,message",
    [
        ("no-tokenizer", "the folder has no tokenizer (tokenizer.json, vocab.txt or tokenizer_config.json); save it beside the model"),
        (
            "hub-name",
            "model.weights=prajjwal1/bert-tiny: no such local folder; give the folder save_pretrained wrote, or add model.download_weights=true",
        ),
        ("offline", "model.weights=prajjwal1/bert-tiny with model.download_weights=true: the Hugging Face hub cannot be reached"),
    ],
)
def test_text_errors_through_the_cli_are_one_line_and_nothing_is_left_running(case: str, message: str, tmp_path: Path) -> None:
    weights = {"no-tokenizer": str(tiny_bert(tmp_path / "m", with_tokenizer=False))}.get(case, "prajjwal1/bert-tiny")
    extra = ["model.download_weights=true"] if case == "offline" else []
    args = ["model=bert", f"model.weights={weights}", *extra]
    result = cli(["data=sentiment", *args, *FAST], cwd=tmp_path, env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    db = tmp_path / "outputs" / "mlflow.db"
    if db.exists():
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            assert conn.execute("select count(*) from runs where status = 'RUNNING'").fetchone()[0] == 0


@pytest.mark.slow
def test_a_model_that_cannot_read_text_is_refused_before_lightning_is_imported(tmp_path: Path) -> None:
    result, imported = train_listing_imports(["data=sentiment", "model=mlp", *FAST], tmp_path)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    assert "model=mlp does not read text; on data=sentiment use model=embedding_bag, bert or tfidf_logistic_regression" in lines[0]
    assert not imported & {"lightning", "torchmetrics", "torchvision"}, imported
    assert not (tmp_path / "outputs" / "mlflow.db").exists() or runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}").empty


# -- the experiments ----------------------------------------------------------------
@pytest.mark.slow
def test_word_embeddings_sweep_compares_word2vec_and_glove(tmp_path: Path) -> None:
    result = cli(
        [
            "-m",
            "experiment=word_embeddings",
            "model=word2vec,glove",
            "model.vector_size=20",
            "trainer.max_epochs=1",
            "+trainer.limit_train_batches=20",
            "+trainer.limit_val_batches=2",
            "+trainer.limit_test_batches=2",
            "callbacks.progress_bar=null",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "gensim" not in result.stdout + result.stderr  # its thousand INFO lines a fit would bury the test table
    runs = runs_of(f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}", "word_embeddings")
    assert sorted(runs["status"]) == ["FINISHED", "FINISHED"]
    for key in ("wordsim353_spearman", "simlex999_spearman", "analogy_accuracy", "analogy_coverage", "wordsim353_coverage"):
        assert runs[f"metrics.test/{key}"].notna().all(), key
    import mlflow

    for run_id in runs["run_id"]:
        names = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id)}
        assert {"embedding_projection.png", "vectors.txt"} <= names, names
    # The vectors one run wrote feed a classifier (model.vectors=<file>).
    vectors = next(Path(p) for p in runs["tags.sweeplab.run_dir"]) / "vectors.txt"
    assert vectors.read_text().split("\n", 1)[0].endswith(" 20")
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("sweeplab")
    compare = subprocess.run(
        [
            str(exe),
            "compare",
            "--experiment",
            "word_embeddings",
            "--metric",
            "test/wordsim353_spearman",
            "--store",
            f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}",
            "--out",
            str(tmp_path / "cmp"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    assert compare.returncode == 0, compare.stderr[-2000:]
    assert "word2vec" in compare.stdout and "glove" in compare.stdout


def test_sweeplab_eval_of_a_glove_run_scores_its_vectors_again(store, tmp_path: Path) -> None:
    from sweeplab.evaluate import evaluate

    limit = ["+trainer.limit_train_batches=5", "+trainer.limit_val_batches=2", "+trainer.limit_test_batches=2"]
    metrics = train_in_process(
        [
            "data=corpus",
            "model=glove",
            "model.vector_size=16",
            "optimizer=adagrad",
            "trainer.max_epochs=2",
            *limit,
            *store_overrides(store),
        ],
        tmp_path / "run",
    )
    run_id = runs_of(store["uri"]).run_id[0]
    again = evaluate(run_id, store["uri"])
    for key in ("test/wordsim353_spearman", "test/simlex999_spearman", "test/analogy_accuracy"):
        assert again[key] == pytest.approx(metrics[key], abs=1e-6), key
