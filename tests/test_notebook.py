"""docs/notebooks/tour.ipynb: committed without outputs, and executed as part of the suite
(nbclient on the `python3` kernel), so the tour never goes stale."""

from __future__ import annotations

import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ROOT

NOTEBOOKS = sorted((ROOT / "docs" / "notebooks").glob("*.ipynb"))
KERNEL = "python3"


@pytest.mark.unit
def test_notebooks_are_committed_without_outputs():
    assert NOTEBOOKS, "docs/notebooks/ holds no notebook"
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, path.name


def kernel_installed() -> None:
    """The `python3` kernelspec, installed for this interpreter only where it is missing."""
    from jupyter_client.kernelspec import KernelSpecManager

    if KERNEL not in KernelSpecManager().find_kernel_specs():
        subprocess.run(
            [sys.executable, "-m", "ipykernel", "install", "--user", "--name", KERNEL], check=True
        )


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, tmp_path, monkeypatch):
    """Every cell runs without an error (two tiny sweeps: ~1-2 min on the 2-core CPU)."""
    kernel_installed()
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's temporary folders land here
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=600, kernel_name=KERNEL, resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on an error
    images = [
        o
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
        if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 3  # the phase diagram, the two-panel figure, the cell, the dynamics
