"""Text: tokenizers, word vectors (Word2Vec, GloVe) and their intrinsic evaluation."""
