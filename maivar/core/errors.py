"""The one exception type a stage turns into a one-line error message."""


class PipelineError(Exception):
    """A user-facing failure: the message says what is wrong and what to fix, on one line."""
