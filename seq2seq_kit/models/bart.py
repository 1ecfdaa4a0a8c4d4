"""STUB: replaced by the model work (issue 4)."""
class BartForConditionalGeneration:  # noqa: D101
    pass
