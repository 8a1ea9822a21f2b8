"""Text in, token ids out: reading and preprocessing, the dataset registry, vocabularies, batching."""
from .batching import min_tokens_needed, num_batches, random_batches, sequential_batches
from .corpus import load_corpus, preprocess, read_text, tokenize
from .registry import DATASETS, dataset_path
from .vocab import Vocab

__all__ = [
    "DATASETS", "Vocab", "dataset_path", "load_corpus", "min_tokens_needed", "num_batches",
    "preprocess", "random_batches", "read_text", "sequential_batches", "tokenize",
]
