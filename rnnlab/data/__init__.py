"""Text in, token ids out: reading and preprocessing, the dataset registry, vocabularies, the
tokenizer saved with a checkpoint, batching, memory-mapped corpora, the train/validation split,
chat exports (``chats``: one message a line, one speaker's if asked)."""
from .batching import min_tokens_needed, num_batches, random_batches, sequential_batches
from .chats import read_chat
from .corpus import load_corpus, preprocess, read_text, tokenize
from .registry import DATASETS, dataset_path
from .text_data import PreparedData, prepare_data, resolve_source, split_points, split_stream
from .tokenizer import Prompt, Tokenizer
from .vocab import Vocab

__all__ = [
    "DATASETS", "PreparedData", "Prompt", "Tokenizer", "Vocab", "dataset_path", "load_corpus", "min_tokens_needed",
    "num_batches", "prepare_data", "preprocess", "random_batches", "read_chat", "read_text", "resolve_source",
    "sequential_batches", "split_points", "split_stream", "tokenize",
]
