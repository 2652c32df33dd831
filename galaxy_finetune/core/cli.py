"""The shared shell of every stage script and command (galaxy-classify, galaxy-similar): quiet logs and one-line
errors (run_command); for a stage also argument parsing and params loading (run_stage)."""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import TYPE_CHECKING, Callable, TypeVar

from galaxy_finetune.core.errors import REQUEUE_STATUS, PipelineError, Requeue, one_line
if TYPE_CHECKING:
    from galaxy_finetune.core.params import Params

# Lightning's INFO lines that advertise its cloud products (litlogger, litmodels), and its hardware census
# (which the stages' own lines say better: "on NVIDIA H100", "no GPU found: training on CPU")
_DROPPED_INFO = ("💡 Tip:", "GPU available:", "TPU available:", "HPU available:")
_LIGHTNING_INFO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
# warnings about library internals a user cannot act on
_SILENCED_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)",  # torch 2.12 deprecates an API Lightning's _pytree.py still uses
    r".*does not have many workers",  # on CPU a batch is one slice of the store's memory map: workers add copies
    r"Found \d+ module\(s\) in eval mode at the start of training",  # lpft's frozen BatchNorm, by design
)


class _NoCensusOrAdverts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_DROPPED_INFO)


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """`warning: <message>` on one line, each distinct message once (no source path, no code line)."""
    text = " ".join(str(message).split())
    if text in _shown:
        return
    _shown.add(text)
    print(f"warning: {text}", file=file or sys.stderr, flush=True)


_shown: set[str] = set()


def quiet_logs() -> None:
    """A stage prints its own lines, progress bars and each real warning once, as one line."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in _LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoCensusOrAdverts) for f in logger.filters):
            logger.addFilter(_NoCensusOrAdverts())
    for pattern in _SILENCED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.showwarning = _one_line_warning


T = TypeVar("T")


def run_command(body: Callable[[], T], interrupted: str = "no outputs were written") -> T:
    """Run `body` with quiet logs and return what it returns; a PipelineError, an OSError (disk full, read-only
    folder...) or Ctrl-C becomes one `error: ...` line and exit 1 (130 for Ctrl-C, followed by `interrupted`); a run
    stopped by SIGTERM/SIGUSR1 with its work saved (Requeue) one `stopped by ...` line and exit REQUEUE_STATUS."""
    quiet_logs()
    try:
        return body()
    except PipelineError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    except Requeue as exc:
        print(str(exc), file=sys.stderr, flush=True)
        sys.exit(REQUEUE_STATUS)
    except OSError as exc:  # the atomic writers left nothing behind
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; free space or fix permissions, then rerun", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print(f"error: interrupted; {interrupted}", file=sys.stderr)
        sys.exit(130)


def run_stage(description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
              body: Callable[[argparse.Namespace, Params], None], argv: list[str] | None = None,
              unchanged: Callable[[argparse.Namespace], bool] | None = None) -> None:
    """Parse args, load validated params, run `body` through run_command. `unchanged(args)`, where given, runs
    first and ends the stage when it returns True: fetch_data's cheap "nothing changed" (data/recheck.py), said
    before params are validated (pydantic alone costs more than the answer) and before anything heavy is imported."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    if unchanged is not None and unchanged(args):
        return
    from galaxy_finetune.core.params import load_params  # pydantic: only for a stage with work to do

    run_command(lambda: body(args, load_params(args.params)))
