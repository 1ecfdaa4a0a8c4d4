"""summarize_corpus(engine="ray") on a local Ray instance (2 CPUs): agrees with the local engine, and an
actor killed mid-job (os._exit in one batch, once) still leaves every document written exactly once."""

from __future__ import annotations

import json
import os
import re

import pytest

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "seq2seq-kit[ray]")')
pytest.importorskip("ray.data", reason='Ray Data is not installed (pip install "seq2seq-kit[ray]")')

from helpers import GEN, by_id, make_docs, read_jsonl, write_jsonl   # noqa: E402
from seq2seq_kit import summarize_corpus   # noqa: E402
from test_families_pipeline import m2m100_path   # noqa: E402,F401 (a fixture)

pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context"),   # Ray Data's own, at start-up
    # max_restarts / max_task_retries passed through **ray_remote_args warned on every job (deprecated in Ray 2.60);
    # the job no longer passes them (ray_engine's _Tries counts the tries): the warning fails a test
    pytest.mark.filterwarnings("error:`ray_remote_args` is deprecated:DeprecationWarning"),
]


@pytest.fixture(scope="module")
def crash_flags(tmp_path_factory):
    """(arm, fired, boom, poison): once `arm` exists, the next actor to wait for its 2nd result dies, once (then
    `fired` exists); while `boom` exists every chunk raises; while `poison` exists every actor doing the chunk of
    documents 1.. dies (its count of deaths kept in the file)."""
    root = tmp_path_factory.mktemp("crash")
    return root / "arm", root / "fired", root / "boom", root / "poison"


@pytest.fixture(scope="module")
def ray_cluster(crash_flags):
    arm, fired, boom, poison = map(str, crash_flags)

    def setup_hook():   # runs in every Ray worker process; defined here so Ray ships it by value
        import os

        from seq2seq_kit.corpus.worker import Worker

        real, calls = Worker.finished, [0]

        def finished(self, in_flight):
            calls[0] += 1
            if calls[0] == 2 and os.path.exists(arm) and not os.path.exists(fired):
                open(fired, "w").close()
                os._exit(1)   # the actor dies mid-chunk: one result of its chunk is already yielded
            return real(self, in_flight)

        Worker.finished = finished
        real_process = Worker.process

        def process(self, chunk):
            if os.path.exists(poison) and chunk["first"] == 1:
                with open(poison, "a") as deaths:
                    deaths.write("x")
                os._exit(1)
            if os.path.exists(boom):
                raise ValueError(f"{chunk['name']}:{chunk['first']} broke the worker")
            return real_process(self, chunk)

        Worker.process = process

    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"worker_process_setup_hook": setup_hook})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, checkpoint):
    """A corpus (5 chunks at batch_size 2: 4 x 8 documents and 6, bad records among them) and its local output."""
    root = tmp_path_factory.mktemp("corpus")
    docs = make_docs(36, seed=7) + [{"id": "empty", "text": ""}, {"id": "long", "text": " ".join(["w"] * 300)}]
    path = write_jsonl(root / "docs.jsonl", docs)
    local = root / "local.jsonl"
    summarize_corpus(path, local, model=checkpoint("tiny"), batch_size=2, progress=False, **GEN)
    return path, local, checkpoint("tiny")


def run_ray(path, out, model, **kwargs):
    return summarize_corpus(path, out, model=model, engine="ray", batch_size=2, progress=False, **GEN, **kwargs)


def test_ray_and_local_engines_agree(ray_cluster, corpus, tmp_path, capfd):
    path, local, model = corpus
    out = tmp_path / "ray.jsonl"
    result = run_ray(path, out, model, actors=2)
    assert "max_restarts > 0" not in capfd.readouterr().err     # Ray core's ERROR line on every run (ray#53727)
    assert (result.written, result.failed, result.truncated) == (37, 1, 1)
    assert by_id(read_jsonl(out)) == by_id(read_jsonl(local))
    errors = lambda p: sorted(json.dumps(e, sort_keys=True) for e in read_jsonl(p.with_name(p.name + ".errors.jsonl")))
    assert errors(out) == errors(local)
    meta = lambda p: json.loads(p.with_name(p.name + ".meta.json").read_text())
    assert meta(out) == meta(local)
    assert run_ray(path, out, model).written == 0      # resumes like the local engine: nothing left


def test_a_killed_actor_loses_and_repeats_nothing(ray_cluster, crash_flags, corpus, tmp_path):
    path, local, model = corpus
    arm, fired = crash_flags[:2]
    arm.touch()
    try:
        result = run_ray(path, tmp_path / "ray.jsonl", model, actors=2)
    finally:
        arm.unlink()
    assert fired.exists(), "no actor was killed: the test did not test anything"
    assert result.written == 37
    assert by_id(read_jsonl(tmp_path / "ray.jsonl")) == by_id(read_jsonl(local))   # each id once, same summaries
    assert os.path.getsize(tmp_path / "ray.jsonl.errors.jsonl") == os.path.getsize(
        local.with_name("local.jsonl.errors.jsonl"))


def test_an_actor_error_is_one_line_as_in_the_local_engine(ray_cluster, crash_flags, corpus, tmp_path, capfd):
    path, _, model = corpus
    boom = crash_flags[2]
    boom.touch()
    try:
        with pytest.raises(ValueError) as e:
            run_ray(path, tmp_path / "ray.jsonl", model, actors=1)
    finally:
        boom.unlink()
    assert re.fullmatch(r"docs.jsonl:\d+ broke the worker", str(e.value))   # type and message; no traceback, colours
    err = capfd.readouterr().err
    assert " ERROR " not in err and "Traceback" not in err


def test_a_model_that_fails_in_its_actors_is_the_local_engines_one_line(ray_cluster, corpus, tmp_path, capfd):
    """Weights that cannot be read fail each actor as it starts (the driver reads config and tokenizer only): the
    error the local engine raises, one line, where it was "Ray: ActorDiedError: The actor died because of an error
    raised in its creation task" after the actor's traceback."""
    import shutil

    path, _, model = corpus
    bad = tmp_path / "bad"
    shutil.copytree(model, bad)
    weights = bad / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100_000])
    with pytest.raises(Exception) as local:
        summarize_corpus(path, tmp_path / "local.jsonl", model=bad, batch_size=2, progress=False, **GEN)
    capfd.readouterr()
    with pytest.raises(Exception) as remote:
        run_ray(path, tmp_path / "ray.jsonl", bad, actors=1)
    assert (type(remote.value), str(remote.value)) == (type(local.value), str(local.value).split("\n")[0])
    assert "Traceback" not in capfd.readouterr().err


def test_more_actors_than_the_clusters_cpus_are_refused(ray_cluster, corpus, tmp_path):
    """As more actors than GPUs: refused by name (Ray Data waited for the CPUs, running fewer actors silently, or
    forever on a cluster without CPUs)."""
    path, _, model = corpus
    with pytest.raises(ValueError, match=r"^actors=3: the Ray cluster has 2 CPU\(s\), at least one per actor; use "
                                         r"actors<=2$"):
        run_ray(path, tmp_path / "ray.jsonl", model, actors=3)


def test_a_chunk_that_kills_every_actor_fails_the_job_after_its_retries(ray_cluster, crash_flags, corpus, tmp_path):
    """An actor restarted and its chunk done again covers a lost node, a few times (RETRIES): a chunk that kills
    each actor doing it (out of memory on one document, a native crash) fails the job with one line, where Ray
    Data's pools retried it forever, writing nothing."""
    from seq2seq_kit.corpus.ray_engine import RETRIES

    path, _, model = corpus
    poison = crash_flags[3]
    poison.touch()
    try:
        with pytest.raises(RuntimeError, match=rf"^Ray: the chunk at docs.jsonl:1 was tried {RETRIES + 1} times, its "
                                               r"actor killed each time \(out of memory\? a crash in a native "
                                               r"library\?\)$"):
            run_ray(path, tmp_path / "ray.jsonl", model, actors=1)
        assert poison.read_text() == "x" * (RETRIES + 1)
    finally:
        poison.unlink()


def test_map_reduce_on_ray_equals_the_local_engine(ray_cluster, checkpoint, tmp_path):
    """strategy="map_reduce" reaches Ray's actors as the local engine's workers: the same records, chunks counted."""
    long = " ".join(f"Report {i} says the tower is {300 + i} metres tall and was built in {1880 + i}."
                    for i in range(60))
    path = write_jsonl(tmp_path / "docs.jsonl", [{"id": "long", "text": long}, {"id": "short", "text": "Short one."}])
    kwargs = dict(model=checkpoint("tiny"), batch_size=2, progress=False, strategy="map_reduce", max_length=8)
    summarize_corpus(path, tmp_path / "local.jsonl", **kwargs)
    summarize_corpus(path, tmp_path / "ray.jsonl", engine="ray", **kwargs)
    records = by_id(read_jsonl(tmp_path / "ray.jsonl"))
    assert records == by_id(read_jsonl(tmp_path / "local.jsonl"))
    assert records["long"]["chunks"] > 1 and records["short"]["chunks"] == 1


def test_a_seeded_sampling_job_on_ray_equals_the_local_engine(ray_cluster, checkpoint, tmp_path):
    """seed reaches every actor's Worker: each document draws from the seed's generator, as in the local engine."""
    path = write_jsonl(tmp_path / "docs.jsonl", make_docs(6, seed=8))
    kwargs = dict(model=checkpoint("tiny"), batch_size=2, progress=False, **{**GEN, "num_beams": 1}, do_sample=True,
                  temperature=2.0, seed=11)
    summarize_corpus(path, tmp_path / "ray.jsonl", engine="ray", actors=2, **kwargs)
    summarize_corpus(path, tmp_path / "local.jsonl", **kwargs)
    summarize_corpus(path, tmp_path / "other.jsonl", **{**kwargs, "seed": 12})
    records = by_id(read_jsonl(tmp_path / "ray.jsonl"))
    assert records == by_id(read_jsonl(tmp_path / "local.jsonl")) != by_id(read_jsonl(tmp_path / "other.jsonl"))


def test_translation_job_on_ray_equals_the_local_engine(ray_cluster, tmp_path, m2m100_path):
    """translate_corpus(engine="ray"): the job's task and languages reach every actor's Worker."""
    from seq2seq_kit import translate_corpus

    path = write_jsonl(tmp_path / "docs.jsonl", make_docs(6, seed=6))
    langs = dict(src_lang="de", tgt_lang="fr", batch_size=2, progress=False, **GEN)
    translate_corpus(path, tmp_path / "ray.jsonl", m2m100_path, engine="ray", actors=1, **langs)
    translate_corpus(path, tmp_path / "local.jsonl", m2m100_path, **langs)
    assert by_id(read_jsonl(tmp_path / "ray.jsonl")) == by_id(read_jsonl(tmp_path / "local.jsonl"))


def test_sigterm_ends_a_ray_job_as_it_ends_a_local_one(checkpoint, tmp_path):
    """A Ray job's driver on SIGTERM dies by the signal, as a local job does, its output whole and resumable (Ray's
    core handler aborted it with a C++ stack dump on stderr)."""
    import signal
    import subprocess
    import sys
    import time

    docs = write_jsonl(tmp_path / "docs.jsonl", make_docs(300, seed=3))
    out = tmp_path / "out.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "seq2seq_kit", "summarize", "--input", docs, "--output", out,
                             "--model", checkpoint("tiny"), "--batch-size", "4", "--max-length", "30", "--ray",
                             "--actors", "1"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while (not out.exists() or len(out.read_text().splitlines()) < 10) and proc.poll() is None:
        assert time.monotonic() < deadline, "the job wrote nothing within 240 s"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == -signal.SIGTERM, err
    assert "SIGTERM received" not in err, err
    assert len(by_id(read_jsonl(out))) >= 10       # every line whole, each id once


def closed_port() -> int:
    """A port of this machine that nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_job_with_nothing_to_do_starts_no_ray(tmp_path, checkpoint):
    """An empty input (or a finished job's re-run) with --ray: done, exit 0, as the local engine, without starting
    or joining Ray (it started a local Ray first, seconds; and failed where the cluster was down)."""
    import subprocess
    import sys

    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    done = subprocess.run([sys.executable, "-m", "seq2seq_kit", "summarize", "--input", empty, "--output",
                           tmp_path / "out.jsonl", "--model", checkpoint("tiny"), "--ray", "--ray-address",
                           f"127.0.0.1:{closed_port()}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_ray_address_nothing_answers_at_is_one_line(corpus, tmp_path):
    """--ray-address HOST:PORT where no head listens: one line naming it, exit 1 (ray.init retried it forever,
    printing a warning every few seconds). A ray:// address is refused before (Ray Client: see below)."""
    import subprocess
    import sys

    path, _, model = corpus
    address = f"127.0.0.1:{closed_port()}"
    done = subprocess.run([sys.executable, "-m", "seq2seq_kit", "summarize", "--input", path, "--output",
                           tmp_path / "out.jsonl", "--model", model, "--ray", "--ray-address", address],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"seq2seq-kit: error: no Ray cluster answers at '{address}' (Connection refused); check the head's address "
        "and port (`ray status` on the head), or leave the address out for a local Ray")


def test_ray_address_auto_without_a_cluster_names_seq2seq_kits_options(monkeypatch):
    """Ray's own message asked for an `--address` flag, which seq2seq-kit does not have (it is --ray-address). Ray
    stands in here: a real "auto" finds any Ray running on this machine (this module's fixture's) by its processes."""
    import types

    from seq2seq_kit import ray_cluster

    def init(address=None, **kwargs):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to by "
                              "setting `--address` flag or `RAY_ADDRESS` environment variable.")

    fake = types.SimpleNamespace(init=init)
    with pytest.raises(ConnectionError, match=re.escape(
            "no running Ray cluster found for address 'auto' (none started on this machine with `ray start --head`, "
            "no RAY_ADDRESS); start one, pass the head's address, or leave the address out for a local Ray")):
        ray_cluster.join(fake, "auto")
    monkeypatch.setattr(ray_cluster, "check_address", lambda address: None)
    with pytest.raises(ConnectionError, match="Could not find any running Ray instance"):   # another address's: Ray's
        ray_cluster.join(fake, "ray://head:10001")


def test_a_ray_address_is_checked_at_its_host_and_port_only(monkeypatch):
    """check_address connects to HOST:PORT (ray:// and an IPv6 address's brackets dropped), within 10 s; "auto",
    None and what is not HOST:PORT are left to Ray."""
    import socket

    from seq2seq_kit import ray_cluster

    tried = []

    class Connection:
        def close(self):
            pass

    monkeypatch.setattr(socket, "create_connection", lambda where, timeout: tried.append((where, timeout)) or
                        Connection())
    for address in (None, "auto", "head", "head:port", "ray://head", "head:", ":6379",
                    "ray://head:10001", "10.0.0.1:6379", "[::1]:6379", "ray://[fe80::1]:10001"):
        ray_cluster.check_address(address)
    assert tried == [(("head", 10001), 10), (("10.0.0.1", 6379), 10), (("::1", 6379), 10), (("fe80::1", 10001), 10)]


def test_joining_ray_keeps_this_processs_sigterm_handler_and_starts_no_dashboard():
    """join: a local Ray without its dashboard, a cluster's address as given; ray.init's own SIGTERM handler (which
    aborts the process) replaced by the one this process had."""
    import signal
    import types

    from seq2seq_kit import ray_cluster

    calls = []

    def init(**kwargs):
        calls.append(kwargs)
        signal.signal(signal.SIGTERM, lambda *_: None)     # as Ray's core does

    def ours(*_):
        pass

    saved = signal.signal(signal.SIGTERM, ours)
    try:
        ray_cluster.join(types.SimpleNamespace(init=init), None)
        assert signal.getsignal(signal.SIGTERM) is ours
        ray_cluster.join(types.SimpleNamespace(init=init), "auto")
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, saved)
    assert calls == [{"address": None, "include_dashboard": False}, {"address": "auto"}]


def fake_cluster(resources: dict, *nodes: tuple[bool, float]):
    """A stand-in for the ray module's cluster_resources() and nodes() (each node: (alive, CPUs))."""
    import types

    return types.SimpleNamespace(cluster_resources=lambda: resources,
                                 nodes=lambda: [{"Alive": alive, "Resources": {"CPU": cpus}} for alive, cpus in nodes])


def test_the_actor_pool_takes_a_gpu_an_actor_or_a_share_of_the_cpus():
    """_pool: one actor per GPU by default (never more actors than GPUs, or chunks); on CPUs one actor per live
    node by default, each with an equal share of the CPUs, at most a node's worth."""
    from seq2seq_kit.corpus.ray_engine import _pool

    gpus = fake_cluster({"GPU": 2.0, "CPU": 8.0}, (True, 8.0))
    assert _pool(gpus, None, None, 5) == (2, {"num_gpus": 1})
    assert _pool(gpus, 1, None, 5) == (1, {"num_gpus": 1})
    assert _pool(gpus, 2, None, 1) == (1, {"num_gpus": 1})               # no more actors than chunks
    with pytest.raises(ValueError) as e:
        _pool(gpus, 3, None, 5)
    assert str(e.value) == "actors=3: the Ray cluster has 2 GPU(s), one per actor; use actors<=2 or device='cpu'"
    assert _pool(gpus, 4, "cpu", 5) == (4, {"num_cpus": 2})             # the CPUs, GPUs there or not
    assert _pool(gpus, None, "cpu", 5) == (1, {"num_cpus": 8})

    nodes = fake_cluster({"CPU": 8.0}, (True, 6.0), (True, 2.0), (False, 16.0))      # a dead node counts no more
    assert _pool(nodes, None, None, 5) == (2, {"num_cpus": 4})
    assert _pool(nodes, None, None, 1) == (1, {"num_cpus": 6})          # one chunk: one actor, a node's CPUs at most
    assert _pool(nodes, 8, None, 20) == (8, {"num_cpus": 1})
    assert _pool(nodes, 3, None, 20) == (3, {"num_cpus": 2})
    with pytest.raises(ValueError) as e:
        _pool(nodes, 9, None, 20)
    assert str(e.value) == "actors=9: the Ray cluster has 8 CPU(s), at least one per actor; use actors<=8"
    with pytest.raises(ValueError) as e:
        _pool(fake_cluster({"GPU": 0.0}, (True, 0.0)), None, None, 5)
    assert str(e.value) == ("the Ray cluster has no CPUs to run actors on; add a node with CPUs (ray start "
                            "--num-cpus N)")


def test_an_actors_error_becomes_the_one_line_the_local_engine_raises():
    """one_line_error: the innermost cause of Ray's wrapped errors, its type and first line, colour codes dropped;
    Ray's own errors named as Ray's."""
    from seq2seq_kit.corpus.ray_engine import one_line_error

    wrapped = lambda cause: ray.exceptions.RayTaskError("fn", "Traceback (most recent call last): ...", cause)
    error = one_line_error(ray, wrapped(wrapped(ValueError("\x1b[31mdocs.jsonl:3 broke\x1b[0m the worker\n  more"))))
    assert (type(error), str(error)) == (ValueError, "docs.jsonl:3 broke the worker")
    error = one_line_error(ray, wrapped(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")))
    assert (type(error), str(error)) == (RuntimeError, "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in "
                                                       "position 0: invalid start byte")
    error = one_line_error(ray, ray.exceptions.ActorDiedError())
    assert (type(error), str(error)) == (RuntimeError, "Ray: ActorDiedError: The actor died unexpectedly before "
                                         "finishing this task.")
    error = one_line_error(ray, ray.exceptions.GetTimeoutError("\x1b[33mtimed out\x1b[0m\nwaiting"))
    assert (type(error), str(error)) == (RuntimeError, "Ray: GetTimeoutError: timed out")


def test_no_chunks_start_or_join_no_ray(monkeypatch):
    """ray_engine.results with nothing to do yields nothing without touching Ray (the driver's guard aside)."""
    import types

    from seq2seq_kit.corpus import ray_engine

    untouchable = types.SimpleNamespace(is_initialized=lambda: pytest.fail("Ray was asked"))
    monkeypatch.setattr(ray_engine, "require_ray", lambda: untouchable)
    monkeypatch.setattr(ray_engine.ray_cluster, "join", lambda *a: pytest.fail("Ray was joined"))
    cluster = ray_engine.Cluster(f"127.0.0.1:{closed_port()}", None, None)
    assert list(ray_engine.results(cluster, [], {})) == []


def job_files(out):
    """A JSONL output and the files beside it: its errors and meta files."""
    return [out, out.with_name(out.name + ".errors.jsonl"), out.with_name(out.name + ".meta.json")]


def sidecars(out):
    """The output and the files beside it, as bytes (None: missing)."""
    return [p.read_bytes() if p.exists() else None for p in job_files(out)]


def copied_output(local, out) -> list:
    """A finished job's files copied to `out`'s place -> sidecars(out), to compare after a refused job."""
    import shutil

    for src, dst in zip(job_files(local), job_files(out)):
        shutil.copy(src, dst)
    return sidecars(out)


def test_overwrite_leaves_the_old_output_whole_when_the_pool_is_refused(ray_cluster, corpus, tmp_path):
    """overwrite=True with more actors than CPUs: refused before the output is emptied (it was emptied first, the
    meta file rewritten, then the pool refused: a finished job's records lost)."""
    path, local, model = corpus
    out = tmp_path / "out.jsonl"
    before = copied_output(local, out)
    with pytest.raises(ValueError, match=r"^actors=3: the Ray cluster has 2 CPU"):
        run_ray(path, out, model, actors=3, overwrite=True)
    assert sidecars(out) == before


def test_overwrite_leaves_the_old_output_whole_when_ray_cannot_be_joined(corpus, tmp_path):
    """--overwrite with a --ray-address nothing answers at: one line, exit 1, the old output as it was."""
    import subprocess
    import sys

    path, local, model = corpus
    out = tmp_path / "out.jsonl"
    before = copied_output(local, out)
    done = subprocess.run([sys.executable, "-m", "seq2seq_kit", "summarize", "--input", path, "--output", out,
                           "--model", model, "--overwrite", "--ray", "--ray-address", f"127.0.0.1:{closed_port()}"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "no Ray cluster answers at" in done.stderr.splitlines()[-1], done.stderr
    assert sidecars(out) == before


def test_a_ray_client_address_is_refused_before_any_file_is_written(corpus, tmp_path, capsys):
    """ray://HOST:PORT (Ray Client): Ray Data does not run over it, so a corpus job refuses it at once, naming the
    GCS address instead (it failed with "'Worker' object has no attribute 'core_worker'" after creating the
    output's files)."""
    from seq2seq_kit.cli import main

    path, _, model = corpus
    out = tmp_path / "out.jsonl"
    code = main(["summarize", "--input", str(path), "--output", str(out), "--model", str(model), "--ray",
                 "--ray-address", "ray://127.0.0.1:10001"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert err[0] == ("seq2seq-kit: error: ray_address 'ray://127.0.0.1:10001' is a Ray Client address, and Ray "
                      "Data (the corpus engine) does not run over Ray Client; pass the cluster's GCS address "
                      "HOST:6379 instead (e.g. head:6379), or run the job on the cluster (on the head, or with `ray "
                      "job submit`)")
    assert sidecars(out) == [None, None, None]


def test_an_address_other_than_the_initialized_rays_is_refused(ray_cluster, corpus, tmp_path):
    """ray.init(...) then a job with another ray_address: refused by name, nothing written (it ran on the Ray
    already initialized, the address ignored); that Ray's own address is taken."""
    from seq2seq_kit.corpus.ray_engine import check_address

    path, _, model = corpus
    address = f"127.0.0.1:{closed_port()}"
    with pytest.raises(ValueError, match=re.escape(f"ray_address={address!r}, but this process is already in the Ray "
                                                   "at ") + r".*; leave ray_address out to run there, or call "
                                                            r"ray\.shutdown\(\) first$"):
        run_ray(path, tmp_path / "out.jsonl", model, ray_address=address)
    assert sidecars(tmp_path / "out.jsonl") == [None, None, None]
    for same in (ray.get_runtime_context().gcs_address, "auto", None):     # that Ray's own address: taken
        check_address(same)
