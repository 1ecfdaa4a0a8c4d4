"""warn(): a warning that points at the user's line, the first caller outside this package (and outside torch's
no_grad / inference_mode wrappers), whichever entry point (generate, the engine, a pipeline, from_pretrained) and
however deep in the package the warning is raised. A fixed stacklevel would point inside the package from every
entry point but one.

A leaf: it imports no other module of the package.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from contextvars import ContextVar

PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
WRAPPERS = (os.path.join("torch", "utils", "_contextlib.py"),)      # torch's decorators' frames (no_grad, ...)


# True inside silenced(): in this thread (or asyncio task) only
QUIET: ContextVar[bool] = ContextVar("seq2seq_kit_quiet", default=False)


@contextlib.contextmanager
def silenced():
    """The package's warnings dropped inside, in this thread alone. warnings.catch_warnings() saves and restores the
    process's filters: two threads inside it at once can leave one's "ignore" in place for good, which hid every
    later warning of the process (pipelines called from several threads)."""
    token = QUIET.set(True)
    try:
        yield
    finally:
        QUIET.reset(token)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """warnings.warn(message, category), attributed to the first frame outside the package and torch's wrappers;
    nothing inside silenced()."""
    if QUIET.get():
        return
    frame, level = sys._getframe(1), 1             # level: frames above this function's caller, plus one
    while frame is not None and (frame.f_code.co_filename.startswith(PACKAGE)
                                 or frame.f_code.co_filename.endswith(WRAPPERS)):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
