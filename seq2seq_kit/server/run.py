"""serve(settings, host, port): the app on uvicorn, until SIGTERM or Ctrl-C, then drained.

Shutdown is uvicorn's graceful shutdown followed by the app's lifespan: the first SIGTERM / SIGINT marks the
service draining (/health and any new /summarize or /translate answer 503, for DrainingServer.GRACE_S), then
uvicorn closes its listening socket and waits up to drain_timeout for the requests in flight to be answered, then
the lifespan closes the engine, which finishes whatever it accepted. A second Ctrl-C answers the requests still
running 503 at once and exits; a third exits without answering them. serve()
returns once drained (the CLI exits 0), or raises the load's error when the model could not be loaded.
"""

from __future__ import annotations

import logging
import signal
import time

import uvicorn

from .app import Service, Settings, build_app, warn_if_exposed

logger = logging.getLogger("seq2seq_kit.server")


class DrainingServer(uvicorn.Server):
    """uvicorn's Server, except that a signal first marks the service draining for GRACE_S seconds (new requests
    get 503 and /health 503, so load balancers look elsewhere, instead of connection resets) before uvicorn's
    shutdown; that the signal is not raised again after the shutdown (uvicorn re-raises it, so the process would
    die by the signal instead of exiting 0); and that a failed model load stops the server."""

    GRACE_S = 1.0

    def __init__(self, config: uvicorn.Config, service: Service):
        super().__init__(config)
        self.service = service
        self.draining_since: float | None = None
        self.answering = True                   # False after a second Ctrl-C

    def handle_exit(self, sig, frame) -> None:
        if self.draining_since is not None and sig == signal.SIGINT:
            self.second_interrupt()
            return
        self.service.stop_accepting(self.GRACE_S)
        self.draining_since = self.draining_since or time.monotonic()

    def second_interrupt(self) -> None:
        """A second Ctrl-C (after a first one or a SIGTERM, however long after): the requests still running are
        answered 503 now (JSON, as when the drain runs out) and leave the engine, then the server exits; a third
        Ctrl-C exits without waiting for their answers (uvicorn then cancels them: a plain-text 500 and a traceback
        each). Counted here, not read off should_exit, which the grace period's end sets as well."""
        if not self.answering:
            self.force_exit = True
        self.answering = False
        self.service.stop_answering()
        self.should_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self.service.status == "failed":
            self.should_exit = True
        if self.draining_since is not None and time.monotonic() - self.draining_since >= self.GRACE_S:
            self.should_exit = True
        return await super().on_tick(counter)


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the server until SIGTERM / Ctrl-C (see the module docstring)."""
    warn_if_exposed(settings, host)
    app = build_app(settings)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on",
                            timeout_graceful_shutdown=settings.drain_timeout)
    try:
        DrainingServer(config, app.state.service).run()
    except SystemExit as e:             # uvicorn's exit when it cannot bind (its own log line says why)
        raise OSError(f"cannot serve on {host}:{port} (in use, or not an address of this machine: uvicorn's "
                      "ERROR line says which)") from e
    loading = getattr(app.state, "loading", None)
    if loading is not None and loading.done() and not loading.cancelled() and loading.exception() is not None:
        raise loading.exception()
