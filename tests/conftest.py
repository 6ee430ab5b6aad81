import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CFG_DIR = Path(os.environ.get("DKD_TEST_CFG_DIR", ROOT / "cfg"))
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture
def root():
    return ROOT
