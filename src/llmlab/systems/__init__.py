"""LLM systems around a model: tools it can call (`tools`), a Python sandbox (`sandbox`), an agent loop
(`agent`), retrieval-augmented generation (`rag`). See docs/tools.md, docs/agents.md and docs/rag.md."""
