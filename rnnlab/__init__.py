"""rnnlab: recurrent neural-network language models over characters and words.

    from rnnlab import DataConfig, ModelConfig, TrainConfig, prepare_data, build_model, Trainer, generate
"""
__version__ = "0.1.0"

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint  # noqa: E402
from .config import DataConfig, ModelConfig, TrainConfig  # noqa: E402
from .data import Vocab, dataset_path, load_corpus  # noqa: E402
from .errors import RnnlabError, UsageError  # noqa: E402
from .metrics import bits_per_token, perplexity  # noqa: E402
from .models import LanguageModel, build_model  # noqa: E402
from .pipeline import prepare_data, train_run  # noqa: E402
from .runtime import seed_everything, select_device  # noqa: E402
from .sampling import generate, generate_ids  # noqa: E402
from .training import Trainer, evaluate  # noqa: E402

__all__ = [
    "Checkpoint", "DataConfig", "LanguageModel", "ModelConfig", "RnnlabError", "TrainConfig", "Trainer",
    "UsageError", "Vocab", "bits_per_token", "build_model", "dataset_path", "evaluate", "generate",
    "generate_ids", "load_checkpoint", "load_corpus", "perplexity", "prepare_data", "save_checkpoint",
    "seed_everything", "select_device", "train_run",
]
