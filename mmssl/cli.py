"""Entry-point guard for recipes and tools: a user error is one line and exit status 2."""
from __future__ import annotations

import sys
from pathlib import Path

from . import dist


def run_main(main, argv=None) -> None:
    """Call `main(argv)`; turn known user errors into one line on stderr (rank 0) and an exit code."""
    from .config import ConfigError
    from .data.shards import DataSpecError
    from .models.encoders import EncoderSpecError
    from .train import TrainingDiverged

    prog = Path(sys.argv[0]).name
    try:
        code = main(argv)
    except (ConfigError, DataSpecError, EncoderSpecError) as exn:
        if dist.rank() == 0:
            print(f"{prog}: error: {exn}", file=sys.stderr)
        sys.exit(2)
    except TrainingDiverged as exn:
        if dist.rank() == 0:
            print(f"{prog}: error: {exn}", file=sys.stderr)
        sys.exit(1)
    sys.exit(code or 0)
