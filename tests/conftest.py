import os
import sys
from pathlib import Path

import pytest

# One intra-op thread: the tests' models are tiny, and with 2 threads any other load on a 2-core
# machine (a training, a second job) makes each parallel region wait for a busy core: a tiny
# PUT training step measured 5.6 ms on 1 thread vs 936 ms on 2 with one core taken.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
sys.path.insert(0, str(Path(__file__).parent))
FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    yield


@pytest.fixture(scope="session", autouse=True)
def _isolated_data_cache(tmp_path_factory):
    """Tests never read or write the user's dataset cache."""
    os.environ["GENSTUDIO_DATA"] = str(tmp_path_factory.mktemp("data"))
    os.environ["GENSTUDIO_CACHE"] = str(tmp_path_factory.mktemp("cache"))  # e.g. the precision micro-benchmark
    yield


@pytest.fixture(scope="session")
def photos_built():
    """The photo source built from skimage + sklearn samples (no Debian download) into the test cache."""
    from genstudio.data import prepare
    return prepare("photos", quiet=True)


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory):
    """A tiny, untrained tokenizer saved in the shipped-checkpoint layout."""
    import torch
    from genstudio.tokenizer import TOKENIZER_CONFIGS, VQTokenizer
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("ckpt") / "tokenizer-tiny"
    VQTokenizer(**TOKENIZER_CONFIGS["tiny"]).save_pretrained(d)
    (d / "README.md").write_text("tiny test tokenizer")
    return d


@pytest.fixture
def no_npm_check(monkeypatch):
    """The fixture tree (tests/fixtures/npm_icons) stands in for npm, so icon builds must not need the npm command."""
    from genstudio.data import SOURCES
    from genstudio.data.registry import _register_all
    _register_all()
    for name in ("icons", "iconify"):
        monkeypatch.setattr(SOURCES[name], "requires", ())
