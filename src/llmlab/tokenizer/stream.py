"""Incremental detokenisation for streaming: text deltas that never split a UTF-8 character."""

from __future__ import annotations

import codecs


class StreamDecoder:
    """Decode ids one at a time for streaming, never splitting a UTF-8 character.

    Bytes of an incomplete character are held back until the next token completes it; invalid
    bytes become U+FFFD exactly as in `tok.decode`, so the concatenated deltas equal the full
    decode:  "".join(d.push(i) for i in ids) + d.flush() == tok.decode(ids).
    Works with any tokenizer that has `decode_bytes` (ours, an imported HF one)."""

    def __init__(self, tok):
        self._tok = tok
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        """Add one token; return the newly completed text (possibly "")."""
        return self._utf8.decode(self._tok.decode_bytes([token_id]), final=False)

    def flush(self) -> str:
        """End of stream: whatever bytes are still pending, as U+FFFD."""
        return self._utf8.decode(b"", final=True)
