"""The same HTTP API from a Ray Serve deployment: each replica runs build_app(settings), so its own engine.

    seq2seq-kit serve --ray --replicas 2                          # a local Ray instance, 2 CPU replicas
    seq2seq-kit serve --ray --ray-address auto --device cuda --autoscale 1:8   # a running cluster, a GPU per replica

Ray Serve's HTTP proxy listens on host:port and routes each request to a replica, whose app is exactly the
single-process server's (routes, validation, limits, API key, metrics; /metrics is that replica's). A replica
builds it with load_in_background=False, so it takes requests only once its model is loaded, and its lifespan
drains its engine when Ray stops it (graceful_shutdown_timeout_s = drain_timeout). SIGTERM / Ctrl-C:
serve.shutdown(), which lets every replica answer what it accepted, then Ray stops.
"""

from __future__ import annotations

import logging
import signal
import threading

from .. import hub, ray_cluster
from ..loading import named_device
from .app import Settings, build_app, warn_if_exposed

logger = logging.getLogger("seq2seq_kit.server")
APP_NAME = "seq2seq-kit"


def require_serve():
    try:
        import ray
        from ray import serve
    except ImportError:
        raise ImportError('--ray needs Ray Serve: pip install "seq2seq-kit[ray,serve]"') from None
    return ray, serve


def application(settings: Settings, *, replicas: int | None = None, autoscale: tuple[int, int] | None = None):
    """The Ray Serve application (a bound deployment) serving `settings`: `replicas` replicas (default 1), or
    autoscaled between autoscale=(MIN, MAX) on each replica's ongoing requests. A replica takes one GPU when
    settings.device is a CUDA device, else one CPU."""
    _, serve = require_serve()

    @serve.ingress()
    class Seq2SeqServer:
        def __init__(self, settings: Settings):
            self.settings = settings

        def __serve_build_asgi_app__(self):
            return build_app(self.settings, load_in_background=False)

    gpu = named_device(settings.device).type == "cuda"      # the replicas check it: they have the GPUs
    scale = (dict(num_replicas=replicas or 1) if autoscale is None else
             dict(autoscaling_config={"min_replicas": autoscale[0], "max_replicas": autoscale[1],
                                      # a replica's engine is busy at max_rows rows: max_rows/4 beam-4 inputs
                                      "target_ongoing_requests": max(1, settings.max_rows // 4)}))
    deployment = serve.deployment(
        Seq2SeqServer, name="Seq2SeqServer", ray_actor_options={"num_gpus": 1} if gpu else {"num_cpus": 1},
        # the engine's queue decides 503s (with Retry-After, as the single-process server): a replica takes twice what
        # its engine holds at one row a request (requests still tokenizing count too), so the engine is full first;
        # Ray's own queue, in front of busy replicas (its requests are lost when the replicas stop), stays short
        max_ongoing_requests=2 * (settings.max_rows + settings.max_queue), max_queued_requests=settings.max_queue,
        graceful_shutdown_timeout_s=settings.drain_timeout, **scale)
    return deployment.bind(settings)


def check_resources(ray, settings: Settings, replicas: int | None, autoscale: tuple[int, int] | None) -> None:
    """ValueError unless the cluster has a GPU (CUDA) or a CPU for each replica that must run: Ray Serve would wait
    for them forever, serving nothing."""
    need = autoscale[0] if autoscale is not None else replicas or 1
    kind = "GPU" if named_device(settings.device).type == "cuda" else "CPU"
    have = int(ray.cluster_resources().get(kind, 0))
    if need > have:
        flag = "--autoscale MIN" if autoscale is not None else "--replicas"
        raise ValueError(f"{need} replica(s) need a {kind} each, and the Ray cluster has {have}; lower {flag}"
                         + (" or serve on the CPU (--device cpu)" if kind == "GPU" else " or add nodes"))


def _start(ray, serve, host: str, port: int) -> None:
    """serve.start with its HTTP proxy on host:port; a proxy that cannot bind is one line naming the address (Ray
    raises the proxy actor's error wrapped in its remote traceback)."""
    try:
        serve.start(http_options={"host": host, "port": port})
    except ray.exceptions.RayTaskError as e:
        cause = str(e.cause).strip().split("\n")[0] if isinstance(e.cause, Exception) else type(e).__name__
        raise OSError(f"cannot serve on {host}:{port} (in use, or not an address of this machine): {cause}") from None


def serve_on_ray(settings: Settings, *, address: str | None = None, replicas: int | None = None,
                 autoscale: tuple[int, int] | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Deploy on Ray (None: a local instance; "auto" / "ray://...": that cluster) and serve until SIGTERM /
    Ctrl-C, then shut the deployment down, its replicas drained."""
    ray, serve = require_serve()
    warn_if_exposed(settings, host)
    hub.resolve(settings.model, purpose="all", **settings.hub_kwargs)   # here: a replica's load error is not shown
    ray_cluster.join(ray, address)
    stop = threading.Event()     # handlers set after ray.init, whose own SIGTERM handler would abort the process
    # a signal while serve.run waits for the replicas (a model loading) takes effect once they run: the proxy may
    # route requests to them before serve.run returns, and those are answered (drained) like any other
    handlers = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        check_resources(ray, settings, replicas, autoscale)    # replicas that cannot run: serve.run would wait forever
        _start(ray, serve, host, port)
        serve.run(application(settings, replicas=replicas, autoscale=autoscale), name=APP_NAME, route_prefix="/")
        logger.info("serving %s on Ray Serve at http://%s:%d", settings.model, host, port)
        while not stop.wait(0.5):   # a timed wait, so the signal handler runs promptly
            pass
        logger.info("draining the replicas")
        serve.delete(APP_NAME)   # while the proxy still runs to carry their answers (serve.shutdown stops it first)
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
