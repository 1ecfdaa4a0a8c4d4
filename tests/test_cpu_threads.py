"""The Engine's thread is the only one holding OpenMP workers (seq2seq_kit/cpu_threads.py): the thread that loaded
the model and creates the Engine gives its pool back, so libgomp does not count two pools against the CPUs (which
made every parallel operation of the engine's step wait for a sleeping worker: 127 vs 107 ms per step, 2 cores).
Checked by the process's threads, in a fresh process: its pool's worker thread exits when it hands its pool over."""

import subprocess
import sys

import pytest

from seq2seq_kit import cpu_threads

CODE = """
import os, sys, time
import torch
torch.set_num_threads(2)
from seq2seq_kit import BartForConditionalGeneration, Engine, cpu_threads

def threads():
    return len(os.listdir("/proc/self/task"))

def settled(count):
    for _ in range(100):                        # the worker exits on its own schedule: up to 1 s
        if threads() == count:
            return True
        time.sleep(0.01)
    return False

model = BartForConditionalGeneration.from_pretrained(sys.argv[1])
torch.ones(1 << 22).mul(2)                      # a parallel operation: this thread's pool has its worker
loaded = threads()
assert cpu_threads.hand_over_pool()
assert settled(loaded - 1), (loaded, threads())
torch.ones(1 << 22).mul(2)                      # the pool comes back with the next parallel work
assert settled(loaded), (loaded, threads())
with Engine(model, max_rows=4) as engine:       # hands this thread's pool over: +1 engine thread, -1 worker
    assert settled(loaded), (loaded, threads())
    engine.submit([0, 31414, 232, 2], max_new_tokens=4, num_beams=2).result()
    assert settled(loaded + 1), (loaded, threads())    # the engine thread's own worker
print("OK")
"""

pytestmark = pytest.mark.skipif(cpu_threads.libgomp() is None, reason="torch on GNU OpenMP (libgomp) only")


def test_the_engine_thread_holds_the_only_openmp_pool(tiny_eos_path):
    out = subprocess.run([sys.executable, "-c", CODE, str(tiny_eos_path)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr


def test_library_paths_with_spaces_are_read_whole():
    """/proc/self/maps' path is the rest of its line: a torch under "/home/x/My Projects/" was read as "Projects/...",
    and the Engine failed at start (ctypes could not open it)."""
    maps = ["7f00-7f01 r-xp 00000000 08:01 123   /home/x/My Projects/venv/torch/lib/libgomp-a34b3233.so.1\n",
            "7f01-7f02 r--p 00000000 08:01 123   /home/x/My Projects/venv/torch/lib/libgomp-a34b3233.so.1\n",
            "7f02-7f03 rw-p 00000000 00:00 0\n", "7f03-7f04 r-xp 00000000 08:01 9 /usr/lib/libgompish.so.2\n"]
    assert cpu_threads.libgomp_paths(maps) == ["/home/x/My Projects/venv/torch/lib/libgomp-a34b3233.so.1"]


def test_hand_over_pool_says_whether_libgomp_released_it(monkeypatch):
    for answer, want in ((0, True), (1, False), (-1, False)):
        monkeypatch.setattr(cpu_threads, "libgomp",
                            lambda answer=answer: type("gomp", (), {"omp_pause_resource_all": lambda mode: answer}))
        assert cpu_threads.hand_over_pool() is want
    monkeypatch.setattr(cpu_threads, "libgomp", lambda: None)
    assert cpu_threads.hand_over_pool() is False
