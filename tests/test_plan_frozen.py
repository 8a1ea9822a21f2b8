"""``plan.settle`` is the one place that fills config fields: once it returns, the four configs
of the plan refuse every attribute write that changes a value, and training, resuming, fine-tuning and the ranks of
``--nproc`` (through the plan file they read) still run."""
import pytest

import rnnlab.pipeline as pipeline
import rnnlab.plan as plan_module
from rnnlab.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from rnnlab.plan import all_fields, read_plan_file, write_plan_file
from rnnlab.runtime import select_device
from rnnlab.speed import SIMULATED_CLOCK_ENV

TEXT = ("it was the best of times, it was the worst of times, it was the age of wisdom, "
        "it was the age of foolishness, it was the epoch of belief, it was the epoch of incredulity. ") * 12
CLASSES = (DataConfig, ModelConfig, TrainConfig, RunConfig)
QUIET = lambda msg: None  # noqa: E731


class Frozen:
    """The configs of every plan settled so far; a write to one of them fails the test."""

    def __init__(self):
        self.objects = []  # kept alive, so that no new config reuses a frozen one's id
        self.ids: set[int] = set()
        self.settled = 0

    def freeze(self, plan):
        self.settled += 1
        self.objects += list(plan.configs)
        self.ids |= {id(c) for c in plan.configs}


@pytest.fixture
def frozen(monkeypatch):
    state = Frozen()
    for cls in CLASSES:
        real = cls.__setattr__

        def guarded(self, name, value, _real=real, _cls=cls):
            old = getattr(self, name, state)
            same = type(old) is type(value) and old == value  # validate() writes back what it checked: no change
            if id(self) in state.ids and not same:
                raise AssertionError(f"{_cls.__name__}.{name} = {value!r} after settle(): fill it in rnnlab.plan")
            _real(self, name, value)
        monkeypatch.setattr(cls, "__setattr__", guarded)
    real_settle = plan_module.settle

    def settle_then_freeze(*a, **k):
        plan = real_settle(*a, **k)
        state.freeze(plan)
        return plan
    monkeypatch.setattr(plan_module, "settle", settle_then_freeze)
    monkeypatch.setattr(pipeline, "settle", settle_then_freeze)
    return state


def test_the_guard_catches_a_write(frozen, tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    plan = plan_module.settle(DataConfig(path=str(tmp_path / "t.txt")), ModelConfig(hidden_size=8), TrainConfig(),
                              RunConfig(recipe="book"), set(), select_device("cpu"))
    with pytest.raises(AssertionError, match="TrainConfig.lr = 2.0 after settle"):
        plan.train.lr = 2.0
    RunConfig().epochs = 3  # a config no plan holds is an ordinary object


def _book(path, **run):
    return (DataConfig(path=str(path), val_fraction=0.1, select_fraction=0.1),
            ModelConfig(model="lstm", impl="fast", hidden_size=16, embedding_dim=8, dropout=0.1),
            TrainConfig(batch_size=4, num_steps=10, optimizer="adam", lr=0.01, lr_schedule="cosine", warmup_steps=3),
            RunConfig(recipe="book", epochs=2, predict_every=1, save_every=1, patience=3, restore_best=True,
                      **run))


def test_train_resume_finetune_and_recipes_write_no_config_after_settle(frozen, tmp_path, monkeypatch):
    (tmp_path / "t.txt").write_text(TEXT)
    (tmp_path / "other.txt").write_text(TEXT.upper())

    book = tmp_path / "book"
    r = pipeline.train_run(*_book(tmp_path / "t.txt"), book, log=QUIET)
    assert len(r.history) == 2 and frozen.settled == 1

    # stopped inside the second epoch (as SIGINT does), then resumed with the stored configs
    part = tmp_path / "part"
    real = pipeline.Trainer

    class Interrupting(real):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.step_callbacks.append(lambda t, loss, n: t.request_stop() if t.step == t.batches_per_epoch + 2 else None)
    monkeypatch.setattr(pipeline, "Trainer", Interrupting)
    assert pipeline.train_run(*_book(tmp_path / "t.txt"), part, log=QUIET).interrupted
    monkeypatch.setattr(pipeline, "Trainer", real)
    r = pipeline.train_run(*pipeline.stored_configs(part), part, log=QUIET, resume=True)
    assert not r.interrupted and len(r.history) == 2 and frozen.settled == 3

    # fine-tuning the book run on another text, its vocabulary grown
    d, m, t, run = _book(tmp_path / "other.txt", init_from=str(book), extend_vocab=True)
    r = pipeline.train_run(d, m, t, run, tmp_path / "tuned", log=QUIET)
    assert len(r.history) == 2 and frozen.settled == 4

    # the default recipe under a budget, on the simulated clock: sizing, evaluation points, the final decay
    monkeypatch.setenv(SIMULATED_CLOCK_ENV, "0.05")
    r = pipeline.train_run(DataConfig(path=str(tmp_path / "t.txt")), ModelConfig(), TrainConfig(),
                           RunConfig(recipe="default", budget=3.0), tmp_path / "default", log=QUIET)
    assert r.history and frozen.settled == 5


def test_the_ranks_plan_file_trains_without_writing_a_config(frozen, tmp_path):
    """``train --nproc N``: the launcher settles and writes the plan file; each rank reads it and
    trains it with every field explicit (here in this process, as one rank would)."""
    (tmp_path / "t.txt").write_text(TEXT)
    plan = plan_module.settle(*_book(tmp_path / "t.txt"), set(), select_device("cpu"), world_size=2)
    write_plan_file(plan, tmp_path / "plan.json")
    configs = read_plan_file(tmp_path / "plan.json")
    assert [c.to_dict() for c in configs] == [c.to_dict() for c in plan.configs]
    r = pipeline.train_run(*configs, tmp_path / "rank", log=QUIET, explicit=all_fields())
    assert len(r.history) == 2 and frozen.settled == 2
