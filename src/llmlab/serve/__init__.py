"""Serving: an OpenAI-compatible HTTP server (FastAPI + uvicorn, extra `[serve]`) and a web chat page.

    from llmlab.serve import create_app
    app = create_app(model, tok, model_name="tiny")      # then: uvicorn.run(app, port=8000)

`llmlab serve --model DIR` does the same from the command line; docs/serving.md shows the clients.
"""

from __future__ import annotations

from llmlab.serve.app import create_app

__all__ = ["create_app"]
