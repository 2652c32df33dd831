"""The error type every stage turns into a one-line message and a non-zero exit."""


class PipelineError(Exception):
    """Bad input or configuration: the message names the file or parameter and what to do."""


def one_line(exc: BaseException) -> str:
    """The message of a PipelineError, on one line even when a DataLoader worker re-raised it with its
    traceback in front ("Caught PipelineError in DataLoader worker process 0. Original Traceback...")."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(exc).__name__
    return last.split("PipelineError: ", 1)[-1] if len(lines) > 1 else last
