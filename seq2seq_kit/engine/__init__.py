"""seq2seq_kit.Engine: continuous batching (scheduler.py: requests, admission, the engine's thread; batch.py: where
the running rows live and how a step runs over them)."""

from .scheduler import Engine, EngineClosed, EngineFull, Request

__all__ = ["Engine", "EngineClosed", "EngineFull", "Request"]
