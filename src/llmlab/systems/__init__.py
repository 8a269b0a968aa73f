"""Systems built around a model: retrieval-augmented generation (`llmlab.systems.rag`)."""
