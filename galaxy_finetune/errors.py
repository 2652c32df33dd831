"""The error type every stage turns into a one-line message and a non-zero exit."""


class PipelineError(Exception):
    """Bad input or configuration: the message names the file or parameter and what to do."""
