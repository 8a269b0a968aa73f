import numpy as np
import pytest
import torch

from llmlab.config import TrainSection
from llmlab.data.batches import sample_windows
from llmlab.model import ModelConfig


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny shapes, one thread: fast and the same numbers on any machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_model_config(**kw) -> ModelConfig:
    base = dict(vocab_size=61, n_layer=2, d_model=32, n_head=4, n_kv_head=2, d_ff=64, context=16)
    return ModelConfig(**{**base, **kw})


def train_cfg(**kw) -> TrainSection:
    base = dict(
        steps=12,
        batch_size=4,
        lr=3e-3,
        min_lr=3e-4,
        warmup=3,
        eval_every=1000,
        save_every=1000,
        log_every=1,
        seed=5,
        device="cpu",
    )
    return TrainSection(**{**base, **kw})


def token_stream(n=4000, vocab=61, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n).astype(np.uint16)


def batches(tokens, cfg: TrainSection, context=16, rank=0, world_size=1):
    def get_batch(step, micro):
        return sample_windows(
            tokens,
            context,
            cfg.batch_size,
            seed=cfg.seed,
            step=step,
            rank=rank,
            world_size=world_size,
            micro=micro,
            grad_accum=cfg.grad_accum,
        )

    return get_batch


TEXT = "".join(
    f"The {w} of the {v} is {u}.\n"
    for w in ("king", "queen", "fool", "lord")
    for v in ("night", "day", "sea", "field")
    for u in ("fair", "foul", "sweet", "sad")
)


@pytest.fixture
def corpus(tmp_path, monkeypatch):
    """A 10-file local corpus of TEXT; $LLMLAB_HOME (tokenizers, shards) points into tmp_path."""
    monkeypatch.setenv("LLMLAB_HOME", str(tmp_path / "home"))
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(10):
        (folder / f"doc{i}.txt").write_text(TEXT * 3)
    return folder
