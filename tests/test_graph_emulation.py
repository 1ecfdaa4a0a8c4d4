"""The CPU stand-in for a CUDA graph (tests/graph_emulation.py) that the CUDA paths' CPU tests stand on: it replays
only the recorded device work, and refuses what a capture on a GPU would refuse."""

import pytest
import torch

from graph_emulation import EmulatedGraph


def test_replay_reads_the_buffers_as_they_are_then_and_skips_the_python():
    x = torch.tensor([1.0, 2.0])
    calls = []

    def step():
        calls.append(1)
        return x * 2 + 1

    graph = EmulatedGraph(step)
    assert len(calls) == 3                                  # two warm-up calls and the recorded one
    x.copy_(torch.tensor([10.0, 20.0]))                     # written in place, as a graph's input buffer is
    out = graph()
    assert len(calls) == 3                                  # no Python ran
    assert out.tolist() == [21.0, 41.0]
    assert graph() is out                                   # the same output buffer every replay


def test_a_host_value_is_frozen_at_capture():
    x = torch.zeros(2)
    counter = [0]

    def step():
        counter[0] += 1
        return x + counter[0]                               # a host counter: baked in when recorded

    graph = EmulatedGraph(step)
    assert graph().tolist() == [3.0, 3.0]
    assert graph().tolist() == [3.0, 3.0]                   # not 4: what a CUDA graph would give too


@pytest.mark.parametrize("step, refusal", [
    (lambda x: x + x.sum().item(), "host read"),
    (lambda x: x.nonzero(), "may wait for the device"),
    (lambda x: torch.isin(x, x[:1]), "may wait for the device"),
    (lambda x: x + torch.tensor([1.0, 2.0]), "host data"),
    (lambda x: x[[0, 1]], "host data"),
])
def test_what_a_capture_refuses_is_refused(step, refusal):
    x = torch.ones(2)
    with pytest.raises(AssertionError, match=refusal):
        EmulatedGraph(lambda: step(x))


def test_tensors_made_on_the_device_are_not_host_data():
    x = torch.ones(3)
    graph = EmulatedGraph(lambda: x + torch.arange(3) + torch.full((3,), 2.0) + torch.where(x > 0, x, 0.0))
    x.fill_(2.0)
    assert graph().tolist() == [6.0, 7.0, 8.0]
