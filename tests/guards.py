"""How long a test waits for a subprocess or a server before calling it hung.

A hang guard, never a speed assertion: generous enough for a host ten times slower than the
machines this project is tested on (the slowest subprocess of the suite takes about a minute on two
loaded cores), so the suite passes on hosts 10x apart and still ends when something really hangs.
``RNNLAB_TEST_HANG_GUARD=90`` plays a host ten times slower (the guard a tenth as long)."""
import os

HANG_GUARD = float(os.environ.get("RNNLAB_TEST_HANG_GUARD", "900"))  # seconds
