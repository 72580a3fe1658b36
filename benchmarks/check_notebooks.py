"""Run the notebooks at the size they ship with, as a user opening them would.

    python benchmarks/check_notebooks.py [NAME ...]

The test suite runs them at a reduced size (``MIXSIM_NOTEBOOK_SMALL=1``, to stay within
the CI budget); their claims that only hold at full size are asserted there, and checked
here: every notebook runs top to bottom from ``notebooks/`` without the variable, and this
prints its wall time and outcome (the first error, if any). Exit code 1 when one fails.
A check, not a test: the full notebooks take minutes to tens of minutes.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def run(path: Path) -> tuple[float, str | None]:
    """Seconds to execute ``path`` at its shipped size, and its first error (or None)."""
    notebook = nbformat.read(path, as_version=4)
    os.environ.pop("MIXSIM_NOTEBOOK_SMALL", None)
    os.environ["MPLBACKEND"] = "Agg"
    started = time.perf_counter()
    try:
        NotebookClient(notebook, timeout=None, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    except CellExecutionError as exc:
        text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))  # the kernel's terminal colours
        lines = [line for line in text.splitlines() if line.strip()]
        return time.perf_counter() - started, lines[-1] if lines else repr(exc)
    return time.perf_counter() - started, None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook file names (default: all)")
    args = parser.parse_args(argv)
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))
    if args.names:
        paths = [p for p in paths if p.name in args.names or p.stem in args.names]
    failed = 0
    for path in paths:
        seconds, error = run(path)
        failed += error is not None
        print(f"{path.name:36} {seconds:8.1f} s  {'ok' if error is None else 'FAILED: ' + error}",
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
