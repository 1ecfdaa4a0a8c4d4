"""`seq2seq-kit serve --ray --replicas 2`: the same HTTP API from a Ray Serve deployment on a local Ray (2 CPU
replicas, each with its own engine), as a real process answering real HTTP."""

from __future__ import annotations

import concurrent.futures
import re
import signal
import socket
import time

import pytest

pytest.importorskip("ray.serve", reason='Ray Serve is not installed (pip install "seq2seq-kit[ray,serve]")')
pytest.importorskip("fastapi", reason='the server needs its extra (pip install "seq2seq-kit[serve]")')

from helpers import make_docs  # noqa: E402
from seq2seq_kit import pipeline  # noqa: E402
import test_server  # noqa: E402
from test_server import PARAMS, Server, engine_metrics, post  # noqa: E402


def test_ray_serve_replicas_answer_like_the_pipeline(tiny_eos_path, tmp_path):
    srv = Server(tmp_path, "--model", tiny_eos_path, "--ray", "--replicas", "2", "--max-rows", "8",
                 "--max-body-bytes", "20000")
    try:
        srv.wait_ready(timeout=300)
        docs = [d["text"] for d in make_docs(8, seed=6)]
        with concurrent.futures.ThreadPoolExecutor(len(docs)) as pool:
            answers = list(pool.map(lambda d: post(srv, {"inputs": d, "parameters": PARAMS}), docs))
        bad = post(srv, {"inputs": "a", "parameters": {"bogus": 1}})
        big = post(srv, {"inputs": "word " * 5000})
        greedy = {"num_beams": 1, "max_new_tokens": 20}
        status, events = test_server.streamed(srv, {"inputs": docs[0], "parameters": greedy})   # through the proxy
    finally:
        code = srv.stop()
    assert code == 0, srv.log.read_text()
    pipe = pipeline("summarization", model=str(tiny_eos_path))
    assert [a.status_code for a in answers] == [200] * len(docs), [a.text for a in answers]
    assert [a.json() for a in answers] == [pipe(d, **PARAMS) for d in docs]
    assert bad.status_code == 422 and bad.json()["field"] == "parameters.bogus"
    assert big.status_code == 413
    assert status == 200 and len(events) > 1, events
    assert events[-1]["generated_text"] == pipe(docs[0], **greedy)[0]["summary_text"]
    assert "".join(e["token"]["text"] for e in events) == events[-1]["generated_text"]


def test_a_cuda_deployment_asks_ray_for_gpus_without_one_on_the_driver():
    """`serve --ray --device cuda` from a head node without a GPU: the replicas (which have the GPUs) check CUDA;
    the driver only asks Ray for a GPU per replica (it refused: torch.cuda.is_available() is False)."""
    from seq2seq_kit.server import Settings
    from seq2seq_kit.server.ray_serve import application

    for device, gpus in (("cuda", 1), ("cuda:1", 1), (0, 1), ("cpu", None), (None, None)):
        deployment = application(Settings(model="unused", device=device), replicas=2)._bound_deployment  # Ray's
        assert deployment.ray_actor_options.get("num_gpus") == gpus, device


def test_the_deployment_takes_its_replicas_limits_and_drain_from_the_settings():
    """What Ray Serve is asked for, without a cluster: the replicas (1 by default), or the autoscaling bounds and
    target (max_rows/4 ongoing requests a replica, at least 1); twice the engine's rows and queue per replica, Ray's
    own queue --max-queue long; the drain timeout as Ray's graceful shutdown; one CPU, or one GPU, a replica."""
    from seq2seq_kit.server import Settings
    from seq2seq_kit.server.ray_serve import application

    def bound(replicas=None, autoscale=None, **settings):
        app = application(Settings(model="unused", **settings), replicas=replicas, autoscale=autoscale)
        return app._bound_deployment   # Ray's

    for replicas, expected in ((None, 1), (1, 1), (3, 3)):
        deployment = bound(replicas)
        assert deployment.num_replicas == expected and deployment._deployment_config.autoscaling_config is None
    plain = bound(None, None, max_rows=6, max_queue=5, drain_timeout=7)
    assert (plain.max_ongoing_requests, plain.max_queued_requests) == (22, 5)
    assert plain._deployment_config.graceful_shutdown_timeout_s == 7
    assert plain.ray_actor_options == {"num_cpus": 1}
    assert bound(2, device="cuda").ray_actor_options == {"num_gpus": 1, "num_cpus": 1}   # Ray's default CPU, kept
    for max_rows, target in ((32, 8), (6, 1), (3, 1), (1, 1)):
        scaled = bound(None, (2, 5), max_rows=max_rows)._deployment_config.autoscaling_config
        assert (scaled.min_replicas, scaled.max_replicas, scaled.target_ongoing_requests) == (2, 5, target), max_rows
    scaled = bound(None, (0, 1))._deployment_config.autoscaling_config
    assert (scaled.min_replicas, scaled.max_replicas) == (0, 1)


def test_replicas_the_cluster_has_no_cpu_or_gpu_for_are_refused_by_name():
    """check_resources on a stand-in cluster: as many replicas as CPUs (GPUs) run; one more is refused, naming the
    flag to lower; an autoscaled deployment needs its MIN replicas only."""
    from types import SimpleNamespace

    from seq2seq_kit.server import Settings
    from seq2seq_kit.server.ray_serve import check_resources

    def check(resources, replicas=None, autoscale=None, device=None, free=None):
        ray = SimpleNamespace(cluster_resources=lambda: resources,
                              available_resources=lambda: resources if free is None else free)
        check_resources(ray, Settings(model="unused", device=device), replicas, autoscale)

    check({"CPU": 2.0}, 2)
    check({"CPU": 1.0})                                     # the default: 1 replica
    check({"CPU": 2.0}, None, (2, 8))                       # MIN replicas run at start; MAX may wait for nodes
    check({"CPU": 4.0, "GPU": 1.0}, 1, device="cuda")
    with pytest.raises(ValueError) as e:
        check({"CPU": 2.0}, 3)
    assert str(e.value) == ("3 replica(s) need a CPU each, and the Ray cluster has 2 free (of 2); lower --replicas or "
                            "add nodes")
    with pytest.raises(ValueError) as e:
        check({"CPU": 2.5}, None, (3, 4))
    assert str(e.value) == ("3 replica(s) need a CPU each, and the Ray cluster has 2 free (of 2); lower --autoscale "
                            "MIN or add nodes")
    with pytest.raises(ValueError) as e:
        check({"CPU": 8.0}, None, None, device="cuda")
    assert str(e.value) == ("1 replica(s) need a GPU each, and the Ray cluster has 0 free (of 0); lower --replicas or "
                            "serve on the CPU (--device cpu)")
    with pytest.raises(ValueError) as e:
        check({}, None, None)
    assert str(e.value) == ("1 replica(s) need a CPU each, and the Ray cluster has 0 free (of 0); lower --replicas or "
                            "add nodes")
    with pytest.raises(ValueError) as e:       # a busy cluster: its CPUs held by another app's replicas
        check({"CPU": 2.0}, 2, free={"CPU": 1.0})
    assert str(e.value) == ("2 replica(s) need a CPU each, and the Ray cluster has 1 free (of 2); lower --replicas or "
                            "add nodes")


def test_a_port_in_use_stops_the_ray_server_with_one_line(tiny_eos_path, tmp_path, monkeypatch):
    """As the plain server: one line naming the address, exit 1 (it was Ray's remote traceback, colour codes and
    all, squeezed into the error line)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(test_server, "free_port", lambda: taken.getsockname()[1])
        srv = Server(tmp_path, "--model", tiny_eos_path, "--ray")
        assert srv.proc.wait(240) == 1
    last = srv.log.read_text().strip().splitlines()[-1]
    assert last.startswith(f"seq2seq-kit: error: cannot serve on 127.0.0.1:{srv.port} (in use, or not an address of "
                           "this machine): "), last
    assert 'File "' not in last and "\x1b[" not in last, last      # no remote traceback, no colour codes


def test_a_model_that_cannot_load_stops_the_ray_server_with_one_line_naming_it(tmp_path):
    """As the plain server: the error names the model (Ray's only said "Failed to update the deployments")."""
    srv = Server(tmp_path, "--model", tmp_path / "missing", "--ray")
    assert srv.proc.wait(240) == 1
    last = srv.log.read_text().strip().splitlines()[-1]
    assert last.startswith("seq2seq-kit: error: ") and "missing" in last, last


def test_more_replicas_than_the_cluster_runs_stop_the_ray_server_with_one_line(tiny_eos_path, tmp_path):
    """Replicas the cluster has no CPU (or GPU) for: refused at start, one line, exit 1; Ray Serve waited for them
    forever, deaf to SIGTERM and Ctrl-C."""
    srv = Server(tmp_path, "--model", tiny_eos_path, "--ray", "--replicas", "999")
    try:
        assert srv.proc.wait(240) == 1
    finally:
        srv.stop()
    last = srv.log.read_text().strip().splitlines()[-1]
    assert re.fullmatch(r"seq2seq-kit: error: 999 replica\(s\) need a CPU each, and the Ray cluster has \d+ free "
                        r"\(of \d+\); lower --replicas or add nodes", last), last


def test_sigterm_answers_the_requests_in_flight(tiny_eos_path, tmp_path):
    """As the plain server: past what the engine holds (1 row running, 1 request waiting) a request gets the engine's
    503 with Retry-After at once (Ray queued it in front of the replica, answered later or, at SIGTERM, dropped
    with no answer); every request accepted before SIGTERM is answered, then exit 0 (serve.shutdown stopped the
    proxy first: the replicas finished, but the clients' connections were closed without an answer)."""
    srv = Server(tmp_path, "--model", tiny_eos_path, "--ray", "--max-rows", "1", "--max-queue", "1")
    greedy = {"min_new_tokens": 250, "max_new_tokens": 250}                   # one row each
    try:
        srv.wait_ready(timeout=300)
        with concurrent.futures.ThreadPoolExecutor(5) as pool:
            running = []
            for d in make_docs(5, seed=3):
                running.append(pool.submit(post, srv, {"inputs": d["text"], "parameters": greedy}, 120))
                time.sleep(0.05)
            # (a scrape can come back without the gauges: Ray's proxy answers it while the replica is busy)
            deadline = time.monotonic() + 120
            while engine_metrics(srv).get("seq2seq_engine_active_rows", 0) == 0:
                assert time.monotonic() < deadline, "no request reached the engine"
                time.sleep(0.05)
            srv.proc.send_signal(signal.SIGTERM)
            answers = [f.result() for f in running]
        assert srv.proc.wait(120) == 0
    finally:
        srv.stop()
    codes = [a.status_code for a in answers]
    assert set(codes) == {200, 503} and codes.count(503) >= 3, [a.text for a in answers]
    assert all(a.headers["retry-after"] == "1" for a in answers if a.status_code == 503)


def test_a_ray_address_nothing_answers_at_stops_the_ray_server_with_one_line(tiny_eos_path, tmp_path):
    """As a corpus job: one line naming the address, exit 1 (ray.init retried it forever)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    srv = Server(tmp_path, "--model", tiny_eos_path, "--ray", "--ray-address", address)
    try:
        assert srv.proc.wait(120) == 1
    finally:
        srv.stop()
    assert srv.log.read_text().strip().splitlines()[-1] == (
        f"seq2seq-kit: error: no Ray cluster answers at '{address}' (Connection refused); check the head's address "
        "and port (`ray status` on the head), or leave the address out for a local Ray")


class FakeServe:
    """A stand-in for ray.serve: what was run, deleted and shut down; run blocks until `release` is set."""

    def __init__(self, running=None, release=True):
        import threading

        self.calls, self.running = [], running
        self.release = threading.Event()
        if release:
            self.release.set()

    def start(self, http_options):
        self.calls.append(("start", http_options["port"]))

    def run(self, app, name, route_prefix):
        self.calls.append(("run", name, route_prefix))
        self.release.wait()

    def delete(self, name):
        self.calls.append(("delete", name))

    def shutdown(self):
        self.calls.append(("shutdown",))

    def status(self):
        from types import SimpleNamespace

        self.calls.append(("status",))
        apps = {"seq2seq-kit": SimpleNamespace(status="RUNNING")} if self.release.is_set() else {}
        return SimpleNamespace(applications=apps)


def test_a_signal_while_the_replicas_start_deletes_the_deployment_and_fails():
    """serve.run waiting for replicas that never start (no free CPU; it ignored SIGTERM and Ctrl-C): the signal
    deletes what was deployed and fails, one line naming it."""
    import threading
    from types import SimpleNamespace

    from seq2seq_kit.server.ray_serve import APP_NAME, _deploy

    serve, stop = FakeServe(release=False), threading.Event()
    threading.Timer(0.3, stop.set).start()
    start = time.monotonic()
    with pytest.raises(InterruptedError) as e:
        _deploy(serve, "app", stop, [signal.SIGTERM])
    assert time.monotonic() - start < 5
    assert serve.calls == [("run", APP_NAME, "/"), ("status",), ("delete", APP_NAME)]
    assert str(e.value) == ("stopped by SIGTERM while the replicas were starting: the deployment is deleted, nothing "
                            "was served (replicas waiting for a CPU or GPU? `ray status` shows what is free)")
    serve.release.set()
    _deploy(serve, "app", threading.Event(), [])           # replicas that start: it returns
    serve.calls.clear()
    serve.release.clear()
    serve.status = lambda: SimpleNamespace(applications={APP_NAME: SimpleNamespace(status="RUNNING")})
    stop.set()
    _deploy(serve, "app", stop, [signal.SIGINT])      # already serving (before serve.run returns): drained as usual
    assert serve.calls == [("run", APP_NAME, "/")]
    serve.release.set()


def test_a_serve_already_on_the_cluster_keeps_its_port_and_its_apps():
    """Ray Serve already running: its proxy's address is the only one to serve on (serve.start ignored --port,
    the log named the port asked for), and an app at our name or route "/" is refused by name (it was replaced)."""
    from seq2seq_kit.server.ray_serve import check_running

    check_running(None, "127.0.0.1", 8000)                                 # no Serve: ours to start
    shared = {"host": "127.0.0.1", "port": 46500, "apps": {"other": "/other"}}
    check_running(shared, "127.0.0.1", 46500)
    with pytest.raises(ValueError) as e:
        check_running(shared, "127.0.0.1", 8000)
    assert str(e.value) == ("Ray Serve already runs on this cluster, its HTTP proxy on 127.0.0.1:46500, and cannot "
                            "listen on 127.0.0.1:8000 too; pass --host 127.0.0.1 --port 46500, or serve on a cluster "
                            "without Ray Serve")
    for apps, name, route in (({"seq2seq-kit": "/"}, "seq2seq-kit", "/"), ({"web": "/"}, "web", "/"),
                              ({"other": "/other", "seq2seq-kit": "/x"}, "seq2seq-kit", "/x")):
        with pytest.raises(ValueError) as e:
            check_running({**shared, "apps": apps}, "127.0.0.1", 46500)
        assert str(e.value) == (f"the Ray Serve application {name!r} already runs on this cluster at route {route!r} "
                                f"(another `serve --ray`?); stop it first (serve.delete({name!r})), or serve on "
                                "another cluster")


@pytest.mark.parametrize("running", [None, {"host": "127.0.0.1", "port": 8000, "apps": {"other": "/other"}}])
def test_the_exit_deletes_our_app_and_shuts_down_only_a_serve_we_started(monkeypatch, tiny_eos_path, running):
    """SIGTERM after deploying: our app deleted; serve.shutdown() (which deletes every app on the cluster) only
    when this process started Serve."""
    import os
    import threading
    from types import SimpleNamespace

    from seq2seq_kit.server import Settings, ray_serve

    serve = FakeServe()
    ray = SimpleNamespace(available_resources=lambda: {"CPU": 2.0}, cluster_resources=lambda: {"CPU": 2.0},
                          shutdown=lambda: serve.calls.append(("ray.shutdown",)))
    monkeypatch.setattr(ray_serve, "require_serve", lambda: (ray, serve))
    monkeypatch.setattr(ray_serve.ray_cluster, "join", lambda ray, address: None)
    monkeypatch.setattr(ray_serve, "running_serve", lambda serve: running)
    monkeypatch.setattr(ray_serve, "application", lambda settings, **kwargs: "app")
    threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
    ray_serve.serve_on_ray(Settings(model=str(tiny_eos_path)), port=8000)
    ours = [("shutdown",)] if running is None else []
    assert serve.calls == [("start", 8000), ("run", "seq2seq-kit", "/"), ("delete", "seq2seq-kit"), *ours,
                           ("ray.shutdown",)]


def test_a_relative_model_path_reaches_the_replicas_absolute(tmp_path, monkeypatch):
    """The replicas run in the raylet's working directory: a local --model is made absolute on the driver (a
    relative one named nothing there, and the error did not name the model); a Hub id is left as it is."""
    from seq2seq_kit.server import Settings
    from seq2seq_kit.server.ray_serve import replica_settings

    (tmp_path / "ckpt").mkdir()
    monkeypatch.chdir(tmp_path)
    assert replica_settings(Settings(model="ckpt")).model == str(tmp_path / "ckpt")
    assert replica_settings(Settings(model="./ckpt/")).model == str(tmp_path / "ckpt")
    assert replica_settings(Settings(model="org/name")).model == "org/name"


def test_serve_on_a_cluster_whose_serve_listens_elsewhere_is_refused_and_leaves_its_apps(tiny_eos_path, tmp_path):
    """A real Ray Serve on the cluster (another team's app on port A): running_serve reads its port and apps;
    `serve --ray --port B` is one line naming port A, exit 1, and the other app still answers (serve.start ignored
    --port, the log named B, and the exit's serve.shutdown() deleted every app on the cluster)."""
    import httpx
    import ray
    from ray import serve

    from seq2seq_kit.server.ray_serve import running_serve

    port = test_server.free_port()
    ray.init(num_cpus=1, include_dashboard=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})

        @serve.deployment(ray_actor_options={"num_cpus": 0})
        class Other:
            async def __call__(self, request):
                return "other app"

        serve.run(Other.bind(), name="other", route_prefix="/other")
        assert running_serve(serve) == {"host": "127.0.0.1", "port": port, "apps": {"other": "/other"}}
        srv = Server(tmp_path, "--model", tiny_eos_path, "--ray", "--ray-address",
                     ray.get_runtime_context().gcs_address)
        try:
            assert srv.proc.wait(120) == 1, srv.log.read_text()
        finally:
            srv.stop()
        assert srv.log.read_text().strip().splitlines()[-1] == (
            f"seq2seq-kit: error: Ray Serve already runs on this cluster, its HTTP proxy on 127.0.0.1:{port}, and "
            f"cannot listen on 127.0.0.1:{srv.port} too; pass --host 127.0.0.1 --port {port}, or serve on a cluster "
            "without Ray Serve")
        assert httpx.get(f"http://127.0.0.1:{port}/other", timeout=30).text == "other app"
    finally:
        serve.shutdown()
        ray.shutdown()
