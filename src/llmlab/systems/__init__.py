"""LLM systems around a model: tools it can call (`tools`), a Python sandbox (`sandbox`), an agent loop
(`agent`). See docs/tools.md and docs/agents.md."""
