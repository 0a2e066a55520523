import pytest
import torch

from tinylora.models.synthetic import tiny_model

ARCHS = ["qwen2", "llama", "gpt2"]


@pytest.fixture(autouse=True, scope="session")
def _factor_cache(tmp_path_factory):
    """The SVD factor cache of the whole test session in a temporary folder (never the user's)."""
    import os

    os.environ["TINYLORA_CACHE_DIR"] = str(tmp_path_factory.mktemp("factor-cache"))
    yield


@pytest.fixture(autouse=True)
def _threads():
    import os

    torch.set_num_threads(int(os.environ.get("TINYLORA_TEST_THREADS", "2")))


def make_model(arch="qwen2", dtype=torch.float32, seed=0, **kw):
    return tiny_model(arch, seed=seed, dtype=dtype, **kw)


def tokens(batch=2, length=9, vocab=128, seed=0):
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def logits(model, x):
    with torch.no_grad():
        return model(x).logits.float()


import os  # noqa: E402
from pathlib import Path  # noqa: E402

# The real benchmark files live beside the checkout (../shared/data), never inside it.
SHARED_DATA = Path(os.environ.get("TINYLORA_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture
def shared_data():
    if not SHARED_DATA.is_dir():
        pytest.fail(f"benchmark data not found at {SHARED_DATA}; set TINYLORA_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture(scope="session")
def quick_backbone(tmp_path_factory):
    """A toy backbone pretrained for 30 steps (seconds): real weights, the toy tokenizer, saved to disk."""
    from tinylora.toy.backbone import PretrainConfig, pretrain

    path = tmp_path_factory.mktemp("quick") / "model"
    pretrain(path, PretrainConfig.quick(steps=30), progress=False)
    return path
