import pytest
import torch

from llmlab.data.synthetic import conversations
from llmlab.model import ModelConfig, Transformer
from llmlab.model.load import save_model_dir
from llmlab.tokenizer import Tokenizer


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def tiny_chat_model(seed: int = 0, vocab: int = 300, context: int = 48, d_model: int = 32):
    texts = [m["content"] for c in conversations("arithmetic")[:300] for m in c]
    tok = Tokenizer.train(texts, vocab)
    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=tok.vocab_size, n_layer=2, d_model=d_model, n_head=4, n_kv_head=2, d_ff=2 * d_model,
        context=context,
    )  # fmt: skip
    return Transformer(cfg), tok


@pytest.fixture(scope="session")
def chat_dir(tmp_path_factory):
    """A tiny (untrained) chat model directory: tokenizer with the chat special tokens."""
    model, tok = tiny_chat_model()
    d = tmp_path_factory.mktemp("chat")
    save_model_dir(
        d, model, tok, generation={"chat_template": "llmlab-v2", "stop_tokens": ["<|end|>", "<|bos|>"]}
    )
    return d


def recipe(*overrides):
    from llmlab.config import load_recipe

    base = ["train.device=cpu", "train.log_every=1", "train.save_every=0", "train.eval_batches=1"]
    return load_recipe(None, base + list(overrides))
