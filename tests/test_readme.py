"""Every Python block of README.md and of the guides in docs/ runs as pasted: saved to a file in an empty
folder (with a copy of configs/, for blocks that name a config) and run with ``python file.py``, as a
reader would, so a block that needs a ``__main__`` guard or an import it forgot fails here."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDES = [README, *sorted((ROOT / "docs").glob("*.md"))]
BLOCKS = [
    (guide, index, code)
    for guide in GUIDES
    for index, code in enumerate(re.findall(r"```python\n(.*?)```", guide.read_text(), flags=re.S))
]


@pytest.mark.parametrize(
    "guide, index, code", BLOCKS, ids=[f"{g.relative_to(ROOT)}-{i}" for g, i, _ in BLOCKS]
)
def test_python_block_runs_as_pasted(guide, index, code, tmp_path):
    shutil.copytree(ROOT / "configs", tmp_path / "configs")
    script = tmp_path / f"block{index}.py"
    script.write_text(code)
    result = subprocess.run(
        [sys.executable, script.name], cwd=tmp_path, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{guide.name} block {index}:\n{result.stderr[-3000:]}"


def test_the_guides_have_python_blocks_and_the_dask_one_has_its_guard():
    """The fence pattern finds blocks at all (a changed fence style must not silently run nothing)."""
    counts = {guide.name: sum(1 for g, _, _ in BLOCKS if g == guide) for guide in GUIDES}
    assert counts["README.md"] >= 1 and counts["layers.md"] >= 2 and counts["sklearn.md"] >= 3, counts
    dask = [code for _, _, code in BLOCKS if "LocalCluster" in code]
    assert len(dask) == 1 and 'if __name__ == "__main__":' in dask[0]


def test_readme_starts_with_the_two_commands():
    first_block = re.search(r"```bash\n(.*?)```", README.read_text(), flags=re.S).group(1)
    lines = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert lines == ["pip install -e . && python train.py", 'pip install -e ".[test,onnx,dask]" && pytest']


def test_readme_is_a_front_door_of_at_most_250_lines():
    assert len(README.read_text().splitlines()) <= 250
