"""The Python examples of the README and of every guide in docs/ run as written (in a temporary folder).

A block fenced as ```python runs; shell commands, printed output and config excerpts use other fences
(```bash, ``` or ```toml) and are not run.
"""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", flags=re.S | re.M)


def python_blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text())


BLOCKS = [
    pytest.param(block, id=f"{page.relative_to(REPO)}-{index}")
    for page in PAGES
    for index, block in enumerate(python_blocks(page))
]


@pytest.mark.parametrize("block", BLOCKS)
def test_python_block_runs(block, request, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(block, request.node.callspec.id, "exec"), {"__name__": "readme"})


def test_the_guides_have_python_blocks_to_run():
    """The fence pattern finds blocks at all (a changed fence style must not silently run nothing)."""
    counts = {page.name: len(python_blocks(page)) for page in PAGES}
    assert counts["README.md"] >= 1 and counts["layers.md"] >= 2 and counts["sklearn.md"] >= 3, counts


def test_readme_starts_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    lines = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert lines == ["pip install -e . && python train.py", 'pip install -e ".[test,onnx,dask]" && pytest']


def test_readme_is_a_front_door_of_at_most_250_lines():
    assert len(README.read_text().splitlines()) <= 250
