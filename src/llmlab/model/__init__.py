"""The decoder-only transformer: config and presets, the network, the KV cache, HF interop."""

from llmlab.model.config import PRESETS, ModelConfig, preset
from llmlab.model.kv_cache import KVCache
from llmlab.model.transformer import Transformer

__all__ = ["PRESETS", "KVCache", "ModelConfig", "Transformer", "preset"]
