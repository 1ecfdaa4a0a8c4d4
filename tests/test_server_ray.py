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

    def check(resources, replicas=None, autoscale=None, device=None):
        ray = SimpleNamespace(cluster_resources=lambda: resources)
        check_resources(ray, Settings(model="unused", device=device), replicas, autoscale)

    check({"CPU": 2.0}, 2)
    check({"CPU": 1.0})                                     # the default: 1 replica
    check({"CPU": 2.0}, None, (2, 8))                       # MIN replicas run at start; MAX may wait for nodes
    check({"CPU": 4.0, "GPU": 1.0}, 1, device="cuda")
    with pytest.raises(ValueError) as e:
        check({"CPU": 2.0}, 3)
    assert str(e.value) == "3 replica(s) need a CPU each, and the Ray cluster has 2; lower --replicas or add nodes"
    with pytest.raises(ValueError) as e:
        check({"CPU": 2.5}, None, (3, 4))
    assert str(e.value) == ("3 replica(s) need a CPU each, and the Ray cluster has 2; lower --autoscale MIN or add "
                            "nodes")
    with pytest.raises(ValueError) as e:
        check({"CPU": 8.0}, None, None, device="cuda")
    assert str(e.value) == ("1 replica(s) need a GPU each, and the Ray cluster has 0; lower --replicas or serve on "
                            "the CPU (--device cpu)")
    with pytest.raises(ValueError) as e:
        check({}, None, None)
    assert str(e.value) == "1 replica(s) need a CPU each, and the Ray cluster has 0; lower --replicas or add nodes"


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
    assert re.fullmatch(r"seq2seq-kit: error: 999 replica\(s\) need a CPU each, and the Ray cluster has \d+; lower "
                        r"--replicas or add nodes", last), last


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
