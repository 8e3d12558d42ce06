"""The tutorials in docs/tutorials/ run, and the outputs stored in them are the ones they print today.

Each notebook is executed in a fresh Jupyter kernel (nbclient), in a temporary folder; a cell that
raises fails the test. Then every code cell's text output (printed text, the value of its last line,
an error) is compared with the stored one, after masking what differs between runs by nature: memory
addresses, durations and figure sizes. Images are compared by kind and count, not by pixels. A changed
number means a stored output is stale: re-execute and store the notebooks with

    MINICNN_UPDATE_NOTEBOOKS=1 pytest tests/test_notebooks.py

then read the diff before committing it.
"""

import copy
import os
import re
import time
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

TUTORIALS = Path(__file__).resolve().parents[1] / "docs" / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
UPDATE = os.environ.get("MINICNN_UPDATE_NOTEBOOKS") == "1"
BUDGET_SECONDS = 60  # each tutorial runs in under a minute on 2 cores (3 to 8 s on a quiet machine)
MASKS = [
    (re.compile(r"0x[0-9a-fA-F]+"), "0x..."),  # memory addresses in reprs
    (re.compile(r"\b\d+(\.\d+)? ?(s|ms|µs|us|seconds)\b"), "<duration>"),
    (re.compile(r"<Figure size [^>]*>"), "<Figure>"),
]


def masked(text: str) -> str:
    for pattern, replacement in MASKS:
        text = pattern.sub(replacement, text)
    return text


def cell_outputs(cell) -> list[tuple[str, str]]:
    """``[(kind, masked text)]`` for one code cell: streams, results and errors as text; images by kind."""
    found: list[tuple[str, str]] = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":  # the kernel splits a long print into chunks as it pleases
            if found and found[-1][0] == output.name:
                found[-1] = (output.name, found[-1][1] + output.text)
            else:
                found.append((output.name, output.text))
        elif output.output_type in ("execute_result", "display_data"):
            data = output.get("data", {})
            images = sorted(kind for kind in data if kind.startswith("image/"))
            found.append((" ".join(images) or "text", masked(data.get("text/plain", ""))))
        elif output.output_type == "error":
            found.append(("error", f"{output.ename}: {output.evalue}"))
    return [(kind, masked(text)) for kind, text in found]


def execute(notebook, folder: Path):
    fresh = copy.deepcopy(notebook)
    client = nbclient.NotebookClient(
        fresh, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, when a cell raises
    return fresh


def test_there_are_four_tutorials():
    assert [path.name[:3] for path in NOTEBOOKS] == ["01_", "02_", "03_", "04_"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.stem)
def test_tutorial_runs_and_its_stored_outputs_are_current(path, tmp_path):
    stored = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    fresh = execute(stored, tmp_path)
    seconds = time.perf_counter() - start
    assert seconds < BUDGET_SECONDS, f"{path.name} took {seconds:.0f} s; the budget is {BUDGET_SECONDS} s"
    if UPDATE:
        nbformat.write(fresh, path)
        return
    code_cells = [
        (index, old, new)
        for index, (old, new) in enumerate(zip(stored.cells, fresh.cells))
        if old.cell_type == "code"
    ]
    assert any(cell_outputs(old) for _, old, _ in code_cells), f"{path.name} is stored without outputs"
    for index, old, new in code_cells:
        assert cell_outputs(old) == cell_outputs(new), (
            f"{path.name}, cell {index}: the stored output is stale; "
            "run MINICNN_UPDATE_NOTEBOOKS=1 pytest tests/test_notebooks.py and review the diff"
        )
