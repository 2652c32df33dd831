"""The error type every stage turns into a one-line message and a non-zero exit."""


class PipelineError(Exception):
    """Bad input or configuration: the message names the file or parameter and what to do."""


def one_line(exc: BaseException) -> str:
    """The message of a PipelineError, on one line even when a DataLoader worker re-raised it with its
    traceback in front ("Caught PipelineError in DataLoader worker process 0. Original Traceback...")."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(exc).__name__
    return last.split("PipelineError: ", 1)[-1] if len(lines) > 1 else last


# The exit status of a run that stopped on request (SIGTERM, SIGUSR1) after saving its work: sysexits.h's
# EX_TEMPFAIL, "a temporary failure; the user is invited to retry". A SLURM batch script requeues on it
# (`[ $? -eq 75 ] && scontrol requeue $SLURM_JOB_ID`, docs/survey-scale.md).
REQUEUE_STATUS = 75


class Requeue(Exception):
    """The run stopped on a signal with every finished row saved: one line, exit status REQUEUE_STATUS."""


def restore_handlers(before: dict) -> None:
    """Put back the signal handlers `before` holds ({signum: signal.getsignal(signum)}, taken before a run installed
    its own); one Python did not install (None) becomes the default."""
    import signal

    for signum, handler in before.items():
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
