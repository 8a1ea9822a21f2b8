"""rnnlab: recurrent neural-network language models over characters and words.

    from rnnlab import DataConfig, ModelConfig, TrainConfig, RunConfig, train_run, load_checkpoint, generate
"""
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import DataConfig, GenerateConfig, ModelConfig, RunConfig, SuggestConfig, TrainConfig
from .data import Tokenizer, Vocab, dataset_path, load_corpus, prepare_data
from .decoding import generate, generate_ids, generate_text
from .errors import RnnlabError, UsageError
from .evaluation import evaluate
from .metrics import bits_per_token, perplexity
from .models import LanguageModel, build_model
from .pipeline import train_run
from .runtime import seed_everything, select_device
from .training import Trainer
from .version import __version__

__all__ = [
    "Checkpoint", "DataConfig", "GenerateConfig", "LanguageModel", "ModelConfig", "RnnlabError", "RunConfig",
    "SuggestConfig", "Tokenizer", "TrainConfig", "Trainer", "UsageError", "Vocab", "__version__", "bits_per_token",
    "build_model", "dataset_path", "evaluate", "generate", "generate_ids", "generate_text", "load_checkpoint",
    "load_corpus", "perplexity", "prepare_data", "save_checkpoint", "seed_everything", "select_device", "train_run",
]
