"""Execute the evaluation notebooks top to bottom, as CI does.

    python notebooks/run_notebooks.py            # run all, save outputs in place
    python notebooks/run_notebooks.py --check    # run all, fail on error, write nothing
    python notebooks/run_notebooks.py 01_relevance_bbc.ipynb

Outputs of cells tagged "corpus-text" (example boxes quoting headlines) are not
saved: the corpora's text is never committed. Each notebook runs with this folder as its working directory and the current Python
as its kernel, so it sees the same installed similar-articles. Vectors come from the
shared embedding cache: a cold cache encodes the corpora once (a few minutes).
Needs: pip install nbclient nbformat ipykernel matplotlib
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CELL_TIMEOUT = 1200  # seconds; a cold embedding cache encodes a whole corpus in one cell


def notebooks() -> list[Path]:
    return sorted(HERE.glob("[0-9][0-9]_*.ipynb"))


def execute(path: Path, *, save: bool) -> float:
    """Run one notebook; raise nbclient's CellExecutionError on the first failing cell."""
    import nbformat
    from nbclient import NotebookClient

    started = time.perf_counter()
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    if save:
        for cell in nb.cells:
            cell.get("metadata", {}).pop("execution", None)  # timings: diff noise
            if "corpus-text" in cell.get("metadata", {}).get("tags", []):
                cell.outputs = []  # quotes the corpora, whose text is never committed
        nbformat.write(nb, path)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="notebook file names (default: all)")
    parser.add_argument("--check", action="store_true", help="do not write outputs back")
    args = parser.parse_args(argv)
    paths = [HERE / n for n in args.names] if args.names else notebooks()
    for path in paths:
        seconds = execute(path, save=not args.check)
        print(f"{path.name}: ok in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
