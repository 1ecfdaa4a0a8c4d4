"""warn(): a warning that points at the user's line, the first caller outside this package (and outside torch's
no_grad / inference_mode wrappers), whichever entry point (generate, the engine, a pipeline, from_pretrained) and
however deep in the package the warning is raised. A fixed stacklevel would point inside the package from every
entry point but one.

A leaf: it imports no other module of the package.
"""

from __future__ import annotations

import os
import sys
import warnings

PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
WRAPPERS = (os.path.join("torch", "utils", "_contextlib.py"),)      # torch's decorators' frames (no_grad, ...)


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """warnings.warn(message, category), attributed to the first frame outside the package and torch's wrappers."""
    frame, level = sys._getframe(1), 1             # level: frames above this function's caller, plus one
    while frame is not None and (frame.f_code.co_filename.startswith(PACKAGE)
                                 or frame.f_code.co_filename.endswith(WRAPPERS)):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level + 1)
