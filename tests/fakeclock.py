"""Clocks for tests of time rules (budgets, --max-seconds, evaluation points, the final decay):
time measured in clock reads, so that a run does the same on a host 10x faster or slower."""
import sys
from pathlib import Path


class StepClock:
    """A clock that advances ``dt`` seconds each time it is read (``Trainer(clock=...)``, or
    ``Trainer.clock`` for every trainer of a process)."""

    def __init__(self, dt: float):
        self.t, self.dt = 0.0, dt

    def __call__(self) -> float:
        self.t += self.dt
        return self.t


def clocked_cli(dt: float) -> list[str]:
    """``[python, -c, script]``: the rnnlab CLI with every trainer on a ``StepClock(dt)``; append
    the command's arguments."""
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import fakeclock, rnnlab.training; "
              f"rnnlab.training.Trainer.clock = fakeclock.StepClock({dt!r}); from rnnlab.cli import main; "
              f"sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", script]
