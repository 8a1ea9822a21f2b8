import os
from pathlib import Path

# Tests run tiny models, and the suite's CLI subprocesses inherit this: one intra-op thread each is
# much faster than two threads fighting over two cores with the other processes.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(autouse=True)
def _data_dir(monkeypatch):
    """Point the dataset registry at the local copies unless the caller already chose a folder."""
    if "RNNLAB_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
        monkeypatch.setenv("RNNLAB_DATA_DIR", str(SHARED_DATA))


@pytest.fixture(autouse=True)
def _speed_file(monkeypatch, tmp_path_factory):
    """Each test starts with no remembered training speeds (``rnnlab.ratebook``), unless it sets its own."""
    monkeypatch.setenv("RNNLAB_SPEED_FILE", str(tmp_path_factory.mktemp("speed") / "speed.json"))


def data_available(name: str) -> bool:
    d = Path(os.environ.get("RNNLAB_DATA_DIR", SHARED_DATA))
    return (d / name).is_file()


@pytest.fixture(scope="session", autouse=True)
def _native_loops_built():
    """Build the C++ loops once, up front, so that no test's subprocess pays for (or prints) the build."""
    from rnnlab.models import native

    native.available()
