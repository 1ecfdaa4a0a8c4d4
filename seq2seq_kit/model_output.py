"""ModelOutput: a dataclass read as transformers' ModelOutput is, the mechanics generate's GenerateOutput
(generation/decoding.py) and the teacher-forced forward's Seq2SeqLMOutput (modeling.py) share.

A leaf: it imports no other module of the package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields


class ModelOutput(Mapping):
    """Base of a @dataclass whose fields default to None: read by attribute (out.logits), by name (out["logits"];
    a field that is not set is a KeyError), by position among the fields that are set (out[0]), and with keys(),
    values(), items(), get(), len(), iteration over the keys, `in`, to_tuple(). A Mapping of the fields that are set
    (transformers' ModelOutput is an OrderedDict): isinstance(out, Mapping), dict(out), {**out}."""

    def keys(self) -> list[str]:
        """The fields that are set (not None), in order."""
        return [f.name for f in fields(self) if getattr(self, f.name) is not None]

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, k) for k in self.keys())

    def __getitem__(self, key: str | int | slice):
        if isinstance(key, str) and key not in self:
            raise KeyError(key)                       # as ModelOutput: out["scores"] without output_scores
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]

    def __len__(self) -> int:
        return len(self.keys())

    def values(self) -> list:
        return list(self.to_tuple())

    def items(self) -> list[tuple[str, object]]:
        return list(zip(self.keys(), self.to_tuple()))

    def get(self, key: str, default=None):
        return getattr(self, key) if key in self else default

    def __iter__(self):
        return iter(self.keys())

    def __contains__(self, key) -> bool:
        return key in self.keys()
