"""The documentation runs as written: every ```python block of README.md and docs/*.md
runs as a script (from a copy of the repository's scenario files, so its outputs stay in
a temporary folder), and no page names a folder of a development machine."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)


def _blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for i, match in enumerate(BLOCK.finditer(page.read_text())):
            found.append((f"{page.relative_to(ROOT)}[{i}]", match.group(1)))
    return found


BLOCKS = _blocks()


def test_the_pages_have_python_blocks():
    assert {name.split("[")[0] for name, _ in BLOCKS} >= {
        "README.md", "docs/kernels.md", "docs/problems-and-data.md", "docs/sweeps.md"}


@pytest.mark.parametrize(("name", "code"), BLOCKS, ids=[name for name, _ in BLOCKS])
def test_python_block_runs_as_written(tmp_path, name, code):
    scenarios = tmp_path / "scenarios"
    scenarios.mkdir()
    for path in (ROOT / "scenarios").glob("*.yaml"):
        (scenarios / path.name).write_bytes(path.read_bytes())
    script = tmp_path / "block.py"
    script.write_text(code)
    # As a script in its own process: Dask's worker processes import it again, as they
    # would a user's (hence the `if __name__ == "__main__":` the sweeps page needs).
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{name}:\n{result.stderr[-3000:]}"


def test_no_page_names_a_development_folder():
    pages = [*PAGES, *(ROOT / "notebooks").glob("*.ipynb"), *(ROOT / "mixsim").rglob("*.py")]
    named = [str(p.relative_to(ROOT)) for p in pages
             if re.search(r"(?<![\w.])/(work|home|Users)/", p.read_text())]
    assert named == []
