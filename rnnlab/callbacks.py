"""Things that happen during training, outside the trainer: metrics file, progress bar, plot."""
from __future__ import annotations

import math
from pathlib import Path

from .io import atomic_write, json_text


class MetricsWriter:
    """Keeps ``metrics.jsonl``: one JSON object per finished epoch.

    On creation the file is rewritten from the trainer's history (empty for a new run, the
    epochs so far for a resumed one), so a resumed run's file equals an uninterrupted run's.
    """

    def __init__(self, path: str | Path, history: list[dict] = ()):
        self.path = Path(path)
        atomic_write(self.path, "".join(json_text(m) + "\n" for m in history).encode())

    def __call__(self, trainer, metrics: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json_text(metrics) + "\n")


class ProgressBar:
    """A tqdm bar over optimizer steps with loss, perplexity, tokens/s and ETA.

    ``step`` is a step callback and ``epoch`` an epoch callback; ``write`` prints a line above
    the bar. Disabled (lines only) when stderr is not a terminal or ``enabled`` is False.
    """

    def __init__(self, total_steps: int, initial: int = 0, enabled: bool = True):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total_steps, initial=initial, unit="step", dynamic_ncols=True,
                        disable=None if enabled else True, leave=True)
        self._loss, self._n, self._tokens = 0.0, 0, 0

    def step(self, trainer, loss, tokens: int) -> None:
        self._loss += float(loss)
        self._n += 1
        self._tokens += tokens
        self.bar.update(1)
        if self._n >= 10:
            mean = self._loss / self._n
            rate = self.bar.format_dict.get("rate") or 0.0
            self.bar.set_postfix_str(f"epoch {trainer.epoch + 1} loss {mean:.3f} ppl {math.exp(min(mean, 50)):.2f} "
                                     f"{rate * self._tokens / self._n:,.0f} tok/s", refresh=False)
            self._loss, self._n, self._tokens = 0.0, 0, 0

    def write(self, line: str) -> None:
        if self.bar.disable:
            print(line, flush=True)
        else:
            self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


def write_plot(history: list[dict], path: str | Path, title: str = "") -> Path | None:
    """Train (and validation) perplexity per epoch, log scale, as a PNG (matplotlib, Agg)."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in history]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    ax.plot(epochs, [m["train_ppl"] for m in history], label="train")
    for key, label in (("select_ppl", "selection slice"), ("val_ppl", "test split")):
        if key in history[0]:
            ax.plot(epochs, [m[key] for m in history], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("perplexity")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


