import os
import tempfile

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


@pytest.fixture
def kill_mid_epoch(monkeypatch):
    """``kill_mid_epoch(epoch_call, batch)``: the ``epoch_call``-th call of ``train_one_epoch`` raises
    KeyboardInterrupt at its ``batch``-th batch (a kill in the middle of an epoch); the returned
    function restores the loop."""
    import otreweight.train.loop as loop

    real = loop.train_one_epoch

    def arm(epoch_call: int, batch: int):
        calls = {"n": 0}

        def dying(run, epoch):
            calls["n"] += 1
            if calls["n"] == epoch_call:
                loss, seen = run.method.loss, []

                def dies(b, meta):
                    seen.append(1)
                    if len(seen) == batch:
                        raise KeyboardInterrupt
                    return loss(b, meta)

                run.method.loss = dies
            return real(run, epoch)

        monkeypatch.setattr(loop, "train_one_epoch", dying)
        return lambda: monkeypatch.setattr(loop, "train_one_epoch", real)

    return arm


# Tests never touch the user's cache (token memory maps, decoded arrays) nor the network.
os.environ.setdefault("OTREWEIGHT_CACHE", tempfile.mkdtemp(prefix="otreweight-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
