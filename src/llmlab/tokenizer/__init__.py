"""Byte-level BPE tokenizer: training (`bpe.py`), encode/decode and files (`tokenizer.py`), chat
template (`chat.py`).

    from llmlab.tokenizer import Tokenizer
    tok = Tokenizer.train(texts, vocab_size=4096)           # gpt4 split pattern, default special tokens
    ids = tok.encode("Hello world"); tok.decode(ids)
    tok.save("tokenizer.json"); tok = Tokenizer.load("tokenizer.json")
"""

from llmlab.tokenizer.bpe import PATTERNS
from llmlab.tokenizer.stream import StreamDecoder
from llmlab.tokenizer.tokenizer import DEFAULT_SPECIAL_TOKENS, Tokenizer

__all__ = ["DEFAULT_SPECIAL_TOKENS", "PATTERNS", "StreamDecoder", "Tokenizer"]
