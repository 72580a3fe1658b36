"""The notebooks run top to bottom through the public API.

The quick ones run at the size they ship with; the others at a reduced size
(``MIXSIM_NOTEBOOK_SMALL=1``), to stay within the CI budget: their shipped size (minutes)
is checked by ``python benchmarks/check_notebooks.py``, which runs every notebook as
shipped.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
#: Notebooks that run as shipped in well under a minute.
AS_SHIPPED = {"00_mixing_time.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, monkeypatch):
    if path.name in AS_SHIPPED:
        monkeypatch.delenv("MIXSIM_NOTEBOOK_SMALL", raising=False)
    else:
        monkeypatch.setenv("MIXSIM_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    # Run from the notebook's own folder, as Jupyter does.
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    errors = [o for cell in notebook.cells if cell.cell_type == "code"
              for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
