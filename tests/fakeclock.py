"""A clock for unit tests of the trainer's time rules (budgets, --max-seconds, evaluation points,
the final decay): time measured in clock reads, so that a run does the same on a host 10x faster or
slower. (CLI runs in a subprocess use the simulated step time, ``rnnlab.speed.SIMULATED_CLOCK_ENV``.)"""


class StepClock:
    """A clock that advances ``dt`` seconds each time it is read (``Trainer(clock=...)``)."""

    def __init__(self, dt: float):
        self.t, self.dt = 0.0, dt

    def __call__(self) -> float:
        self.t += self.dt
        return self.t

