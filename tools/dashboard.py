"""The live cluster dashboard: ``python -m tools.dashboard [options]`` is
``consensus-store dashboard [options]`` (see ``consensus_store/cli/dashboard.py``)."""
from __future__ import annotations

import sys

from consensus_store.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main(["dashboard", *sys.argv[1:]]))
