"""The shared shell of every stage script: argument parsing, params loading, one-line errors."""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import Callable

from galaxy_finetune.errors import PipelineError, one_line
from galaxy_finetune.params import Params, load_params


def run_stage(description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
              body: Callable[[argparse.Namespace, Params], None], argv: list[str] | None = None) -> None:
    """Parse args, load validated params, run `body`; a PipelineError becomes `error: ...` and exit 1."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--params", default="params.yaml", help="parameters file (default: params.yaml)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")  # batches are tensor indexes
    try:
        body(args, load_params(args.params))
    except PipelineError as exc:
        print(f"error: {one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    except OSError as exc:  # disk full, read-only folder, ...: the atomic writers left nothing behind
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}; free space or fix permissions, then rerun", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted; no outputs were written", file=sys.stderr)
        sys.exit(130)
