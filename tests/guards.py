"""How long a test waits for a subprocess or a server before calling it hung.

A hang guard, never a speed assertion: generous enough for a host ten times slower than a laptop
(the slowest subprocess of the suite takes about a minute on two loaded cores), so the suite passes
on hosts 10x apart and still ends when something really hangs."""
HANG_GUARD = 900  # seconds
