"""STUB: replaced by the pipeline work (issue 6)."""
def pipeline(*args, **kwargs):  # noqa: D103
    raise NotImplementedError
