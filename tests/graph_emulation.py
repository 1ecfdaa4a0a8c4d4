"""A CUDA graph's semantics on the CPU, to test the code the CUDA paths capture (cuda_capture.CapturedStep's users:
generate's decoder and whole-step graphs, the engine's decoder graphs per bucket set and group search steps) on a
machine without a GPU: `monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)`.

What a CUDA graph keeps of a captured call is the device work, not the Python: replaying it runs the same kernels
on the same memory, reading whatever the tensors hold by then, and a tensor made during the capture is a fixed
buffer that every replay writes again. EmulatedGraph records the aten ops of one call of fn (after the two warm-up
calls CapturedStep makes) and replays exactly those ops on the very tensors they ran on: an op that made a new
tensor writes its result into the recorded one (a static buffer), an in-place or out= op writes where it wrote.
So a step whose Python decides anything from state that changes between steps (a host counter, a tensor rebound
instead of written in place, a shape) gives other tokens here than when it runs eagerly; a host read inside the
step is refused, as a capture refuses it, and so are ops that may wait for the device on CUDA (MAY_SYNC) and
tensors made from host data (torch.tensor(...), x[[0, 2]]: a copy from host memory on CUDA).
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


# Ops whose CUDA kernels may wait for the device (output sizes read back, or an algorithm chosen by size:
# torch.isin sorts and calls unique once the tested set has >= 10 * elements ** 0.145 values): a capture fails on
# them, on the GPU only, and only for some inputs, so they are refused here on any machine.
MAY_SYNC = {"aten.isin", "aten.nonzero", "aten._unique2", "aten.unique_dim", "aten.unique_consecutive",
            "aten.masked_select", "aten.repeat_interleave",
            "aten.multinomial"}     # checks its probabilities on the host (draws.draw_on_device draws without)


class _Recorder(TorchDispatchMode):
    def __init__(self, ops: list):
        super().__init__()
        self.ops = ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        assert str(func) != "aten._local_scalar_dense.default", "a host read inside a captured step"
        assert str(func.overloadpacket) not in MAY_SYNC, f"{func} inside a captured step: it may wait for the device"
        assert str(func.overloadpacket) != "aten.lift_fresh", \
            "a tensor made from host data (torch.tensor, a list index) inside a captured step: on CUDA a copy from " \
            "pageable host memory, which a capture refuses; make it before the capture"
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, out))       # keeps every tensor alive: addresses stay unique
        return out


class EmulatedGraph:
    """Drop-in for cuda_capture.CapturedStep (fn, device, pool): two warm-up calls, one recorded; calling replays.
    Memory pools are not emulated. `all_replays` counts every emulated graph's replays (replays())."""
    all_replays = 0

    def __init__(self, fn, device=None, pool=None, generators=()):     # a replayed op draws from its generator
        for _ in range(2):
            fn()
        self.ops: list = []
        with _Recorder(self.ops):
            self.outputs = fn()
        self.replays = 0
        self.pool = None

    def __call__(self):
        with torch.inference_mode():                     # the recorded buffers may be inference tensors
            for func, args, kwargs, out in self.ops:
                result = func(*args, **kwargs)
                for new, old in zip(_tensors(result), _tensors(out)):
                    if new.data_ptr() != old.data_ptr():  # a new tensor: into the recorded buffer
                        old.copy_(new)
        self.replays += 1
        EmulatedGraph.all_replays += 1
        return self.outputs


def _tensors(value) -> list[torch.Tensor]:
    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]


def replays() -> int:
    """How many times emulated graphs have replayed in this process (a test of a graphed path asserts this grew:
    equal outputs alone pass when no graph runs at all)."""
    return EmulatedGraph.all_replays


def emulate_generate_graphs(monkeypatch, whole_step_sampling: bool = False) -> None:
    """generate's CUDA-graph paths on the CPU for calls given cuda_graph=True: graphs emulated, none kept from
    other tests; whole_step_sampling: sampling replays the whole step too (decoding.WHOLE_STEP_SAMPLING)."""
    from seq2seq_kit import cuda_capture
    from seq2seq_kit.generation import decoding, whole_step

    monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)
    monkeypatch.setattr(decoding, "use_cuda_graph", lambda cuda_graph, device: bool(cuda_graph))
    monkeypatch.setattr(decoding, "WHOLE_STEP_SAMPLING", whole_step_sampling)
    monkeypatch.setattr(whole_step, "KEPT", type(whole_step.KEPT)())
