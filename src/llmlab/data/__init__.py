"""Data: corpora, token shards, batches."""
