"""The same HTTP API from a Ray Serve deployment: each replica runs build_app(settings), so its own engine.

    seq2seq-kit serve --ray --replicas 2                          # a local Ray instance, 2 CPU replicas
    seq2seq-kit serve --ray --ray-address auto --device cuda --autoscale 1:8   # a running cluster, a GPU per replica

Ray Serve's HTTP proxy listens on host:port and routes each request to a replica, whose app is exactly the
single-process server's (routes, validation, limits, API key, metrics; /metrics is that replica's). A replica
builds it with load_in_background=False, so it takes requests only once its model is loaded, and its lifespan
drains its engine when Ray stops it (graceful_shutdown_timeout_s = drain_timeout). SIGTERM / Ctrl-C: the app is
deleted, which lets every replica answer what it accepted, then Serve is shut down if this process started it (a
Serve already on the cluster is shared: its port kept, its other apps left alone), then Ray. SIGTERM / Ctrl-C
while the replicas start deletes what was deployed and fails.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import threading

from .. import hub, ray_cluster
from ..loading import named_device
from .app import Settings, build_app, warn_if_exposed

logger = logging.getLogger("seq2seq_kit.server")
APP_NAME = "seq2seq-kit"
ROUTE = "/"


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
    """ValueError unless the cluster has a GPU (CUDA) or a CPU free for each replica that must run: Ray Serve would
    wait for them forever, serving nothing. Free ones: what other jobs and apps hold is not there to take."""
    need = autoscale[0] if autoscale is not None else replicas or 1
    kind = "GPU" if named_device(settings.device).type == "cuda" else "CPU"
    have = int(ray.available_resources().get(kind, 0))
    if need > have:
        flag = "--autoscale MIN" if autoscale is not None else "--replicas"
        total = int(ray.cluster_resources().get(kind, 0))
        raise ValueError(f"{need} replica(s) need a {kind} each, and the Ray cluster has {have} free (of {total}); "
                         f"lower {flag}" + (" or serve on the CPU (--device cpu)" if kind == "GPU" else
                                            " or add nodes"))


def running_serve(serve) -> dict | None:
    """The Serve already running on the cluster, as {"host", "port", "apps": {name: route prefix}}; None when none
    runs. Ray has no public call for its HTTP options (serve.status() leaves them out): its controller's details."""
    from ray.serve.context import _get_global_client   # Ray's own, not public (tested on Ray 2.60): a Ray without
                                                        # it fails here, rather than serve unchecked and shut down
    client = _get_global_client(raise_if_no_controller_running=False)   # another's Serve at the exit
    if client is None:
        return None
    details = client.get_serve_details()
    http = details.get("http_options") or {}
    return {"host": http.get("host"), "port": http.get("port"),
            "apps": {name: app.get("route_prefix") for name, app in (details.get("applications") or {}).items()}}


def check_running(running: dict | None, host: str, port: int) -> None:
    """A Serve already on the cluster is shared: its HTTP proxy stays where it listens (serve.start ignored the
    port asked for, the log named it), and an app at our name or route is not ours to replace. ValueError naming
    either."""
    if running is None:
        return
    if (running["host"], running["port"]) != (host, port):
        raise ValueError(f"Ray Serve already runs on this cluster, its HTTP proxy on {running['host']}:"
                         f"{running['port']}, and cannot listen on {host}:{port} too; pass --host {running['host']} "
                         f"--port {running['port']}, or serve on a cluster without Ray Serve")
    for name, route in running["apps"].items():
        if name == APP_NAME or route == ROUTE:
            raise ValueError(f"the Ray Serve application {name!r} already runs on this cluster at route {route!r} "
                             f"(another `serve --ray`?); stop it first (serve.delete({name!r})), or serve on another "
                             "cluster")


def replica_settings(settings: Settings) -> Settings:
    """settings with a local model directory made absolute: the replicas run in the raylet's working directory,
    where a relative path names nothing. A Hub id is left as it is (each replica resolves it)."""
    path = os.path.expanduser(str(settings.model))
    return dataclasses.replace(settings, model=os.path.abspath(path)) if os.path.isdir(path) else settings


def _start(ray, serve, host: str, port: int) -> None:
    """serve.start with its HTTP proxy on host:port; a proxy that cannot bind is one line naming the address (Ray
    raises the proxy actor's error wrapped in its remote traceback)."""
    try:
        serve.start(http_options={"host": host, "port": port})
    except ray.exceptions.RayTaskError as e:
        cause = str(e.cause).strip().split("\n")[0] if isinstance(e.cause, Exception) else type(e).__name__
        raise OSError(f"cannot serve on {host}:{port} (in use, or not an address of this machine): {cause}") from None


def _deploy(serve, app, stop: threading.Event, received: list) -> None:
    """serve.run(app) until its replicas run, or until `stop` is set (SIGTERM / Ctrl-C, the signal in `received`)
    before they do: then what was deployed is deleted and an InterruptedError raised. serve.run waits in a thread of
    its own (replicas that never get a CPU, a model still loading: it waited on through SIGTERM and Ctrl-C). An app
    already RUNNING (the proxy routes to it before serve.run returns) is served, then drained, as any other."""
    error = []

    def run():
        try:
            serve.run(app, name=APP_NAME, route_prefix=ROUTE)
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            error.append(e)

    thread = threading.Thread(target=run, name="serve.run", daemon=True)
    thread.start()
    while thread.is_alive():
        if stop.wait(0.5):
            app = serve.status().applications.get(APP_NAME)
            if app is not None and app.status == "RUNNING":
                return
            serve.delete(APP_NAME)
            raise InterruptedError(f"stopped by {signal.Signals(received[0]).name} while the replicas were "
                                   "starting: the deployment is deleted, nothing was served (replicas waiting for a "
                                   "CPU or GPU? `ray status` shows what is free)")
    if error:
        raise error[0]


def serve_on_ray(settings: Settings, *, address: str | None = None, replicas: int | None = None,
                 autoscale: tuple[int, int] | None = None, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Deploy on Ray (None: a local instance; "auto" / "ray://...": that cluster) and serve until SIGTERM /
    Ctrl-C, then delete the deployment, its replicas drained. A Serve already running on the cluster is shared:
    our app only is deleted, and Serve shut down only when this process started it."""
    ray, serve = require_serve()
    warn_if_exposed(settings, host)
    hub.resolve(settings.model, purpose="all", **settings.hub_kwargs)   # here: a replica's load error is not shown
    settings = replica_settings(settings)
    ray_cluster.join(ray, address)
    stop, received = threading.Event(), []    # handlers set after ray.init, whose SIGTERM handler aborts the process
    handlers = {sig: signal.signal(sig, lambda sig, _: (received.append(sig), stop.set()))
                for sig in (signal.SIGTERM, signal.SIGINT)}
    ours = deployed = False
    try:
        check_resources(ray, settings, replicas, autoscale)    # replicas that cannot run: serve.run would wait forever
        running = running_serve(serve)
        check_running(running, host, port)
        ours = running is None
        _start(ray, serve, host, port)
        deployed = True
        _deploy(serve, application(settings, replicas=replicas, autoscale=autoscale), stop, received)
        logger.info("serving %s on Ray Serve at http://%s:%d", settings.model, host, port)
        while not stop.wait(0.5):   # a timed wait, so the signal handler runs promptly
            pass
        logger.info("draining the replicas")
        serve.delete(APP_NAME)   # while the proxy still runs to carry their answers (serve.shutdown stops it first)
        deployed = False
    finally:
        try:
            if ours:
                serve.shutdown()
            elif deployed:
                serve.delete(APP_NAME)      # an error while deploying: ours only, the cluster's Serve left running
        finally:
            ray.shutdown()
            for sig, handler in handlers.items():
                signal.signal(sig, handler)
