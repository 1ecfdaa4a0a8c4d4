"""`seq2seq-kit serve`: the summarization or translation pipeline over HTTP, on the continuous-batching engine.

    seq2seq-kit serve --model sshleifer/distilbart-cnn-12-6                  # http://127.0.0.1:8000
    curl -s localhost:8000/summarize -H 'Content-Type: application/json' \\
         -d '{"inputs": "The tower is 324 metres tall ...", "parameters": {"max_length": 60}}'
    # [{"summary_text": "..."}]
    # a translation model (Marian, M2M100, NLLB, mBART-50) answers POST /translate instead:
    #   {"inputs": "...", "parameters": {"src_lang": "eng_Latn", "tgt_lang": "fra_Latn"}} -> [{"translation_text": ...}]

    app.py        build_app(Settings): the FastAPI app (routes, limits, API key, metrics, lifespan)
    schema.py     the request bodies (pydantic models), their generate arguments, their faults named per field
    run.py        serve(Settings, host, port): that app on uvicorn; SIGTERM / Ctrl-C drain it
    ray_serve.py  serve_on_ray(...): the same app as a Ray Serve deployment, one engine per replica

FastAPI, uvicorn and prometheus_client are the `serve` extra; importing this package without them raises an
ImportError with the install line.
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as e:
    raise ImportError(f'seq2seq-kit serve needs the serve extra ({e.name} is missing): '
                      'pip install "seq2seq-kit[serve]"') from None

from .app import Settings, build_app
from .run import serve

__all__ = ["Settings", "build_app", "serve"]
