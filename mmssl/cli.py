"""Entry-point guard for recipes and tools: a user error is one line and exit status 2."""
from __future__ import annotations

import sys
from pathlib import Path

from . import dist


def run_main(main, argv=None) -> None:
    """Call `main(argv)`; turn known user errors into one line on stderr (rank 0) and an exit code."""
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data.shards import DataSpecError
    from .models.encoders import EncoderSpecError
    from .train import last_line
    from .watch import RunInterrupted, TrainingDiverged

    prog = Path(sys.argv[0]).name
    if prog == "__main__.py":  # python -m mmssl.eval
        prog = f"python -m mmssl.{Path(sys.argv[0]).parent.name}"
    try:
        code = main(argv)
    except (ConfigError, DataSpecError, EncoderSpecError, CheckpointError) as exn:
        if dist.rank() == 0:
            print(f"{prog}: error: {last_line(exn)}", file=sys.stderr)
        sys.exit(2)
    except RunInterrupted as exn:
        if dist.rank() == 0:
            print(f"{prog}: stopped: {exn}", file=sys.stderr)
        sys.exit(exn.code)
    except TrainingDiverged as exn:
        if dist.rank() == 0:
            print(f"{prog}: error: {exn}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)
