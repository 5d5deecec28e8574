import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _few_threads():
    """Tests run on 2 cores; keep torch from oversubscribing them."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def tiny_npz(tmp_path_factory):
    """A tiny image data set (4 classes, 8x8 RGB, 40 train / 10 test per class) as an .npz source."""
    rng = np.random.default_rng(0)
    k = 4
    y, yt = np.repeat(np.arange(k), 40), np.repeat(np.arange(k), 10)

    def images(labels):
        x = rng.integers(0, 60, (len(labels), 8, 8, 3)).astype(np.uint8)
        for c in range(k):
            x[labels == c, :, :, c % 3] += 100 + 30 * c
        return x

    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, x_train=images(y), y_train=y, x_test=images(yt), y_test=yt)
    return path
