"""Command line of the linearizability checker (``consensus_store.testing.lincheck``).

    python tools/lincheck.py [--timeout S] FILE...

FILE: a Jepsen log or a JSON-lines history (formats: the package's docstring).  Exit 0 all
linearizable, 1 some not, 2 unreadable or malformed input, 3 the time bound was hit.
"""

from __future__ import annotations

import argparse
import sys

from consensus_store.testing.lincheck import HistoryError, check_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check histories for linearizability.")
    parser.add_argument("files", nargs="+", metavar="FILE", help="Jepsen log or JSON-lines history")
    parser.add_argument("--timeout", type=float, default=None, metavar="S", help="time bound per file")
    args = parser.parse_args(argv)
    codes = set()
    for path in args.files:
        try:
            result = check_file(path, args.timeout)
        except HistoryError as err:
            print(f"{path}: error: {err}", file=sys.stderr)
            codes.add(2)
            continue
        if result.linearizable is None:
            print(f"{path}: unknown (timed out)")
            codes.add(3)
        elif result.linearizable:
            print(f"{path}: linearizable")
        else:
            print(f"{path}: not linearizable")
            print("  " + result.explanation.replace("\n", "\n  "))
            codes.add(1)
    return next((code for code in (2, 1, 3) if code in codes), 0)


if __name__ == "__main__":
    sys.exit(main())
