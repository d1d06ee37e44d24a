"""notebooks/explore_manifest.ipynb executed top to bottom (nbclient) against runs the tests produce.

The kernel is this interpreter: a kernelspec named ``python3`` whose argv is
``sys.executable`` is written to a temporary JUPYTER_PATH (searched first), so the
notebook never lands on another Python that lacks the project's packages.
"""

from __future__ import annotations

import json
import re
import sys

import nbformat
import pytest

from tests.conftest import ROOT
from tests.report_doubles import produce_run

NOTEBOOK = ROOT / "notebooks" / "explore_manifest.ipynb"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    return produce_run(tmp_path_factory.mktemp("notebook"))


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch):
    """A ``python3`` kernelspec that runs ipykernel in this test's own interpreter."""
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager

    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (ffhq-uv venv)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    assert KernelSpecManager().get_kernel_spec("python3").argv[0] == sys.executable
    return "python3"


def _execute(kernel: str) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), \
        "commit the notebook without outputs"
    client = NotebookClient(notebook, timeout=180, kernel_name=kernel,
                            resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    return notebook


def _outputs(notebook: nbformat.NotebookNode) -> tuple[str, list[str]]:
    """All text the cells printed or displayed, and the text/plain of every figure."""
    texts, figures = [], []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output.output_type != "error", output
            if output.output_type == "stream":
                texts.append(output.text)
            elif "data" in output:
                if "image/png" in output.data:
                    figures.append(cell.source)
                texts.append(output.data.get("text/plain", ""))
    return "\n".join(texts), figures


def test_notebook_on_a_local_run(finished_run, venv_kernel, monkeypatch):
    monkeypatch.setenv("FFHQ_UV_RUN", str(finished_run["output"]))
    monkeypatch.delenv("FFHQ_UV_ENDPOINT_URL", raising=False)
    text, figures = _outputs(_execute(venv_kernel))
    assert f"run        {finished_run['output']}" in text
    assert "8 ok, 2 failed, 0 filtered" in text
    assert "10 rows" in text
    # Four figures: statuses/reasons, the 17 attributes, stage timings/throughput, the UV grid.
    assert len(figures) == 4
    assert "<Figure size 1500x700 with 18 Axes>" in text  # 17 attribute histograms (+1 blank panel)
    assert "<Figure size 500x1500 with 12 Axes>" in text  # 6 samples x (source, uv)
    assert "test_failure" in text and "not_an_image" in text and "relight was told to fail img_002" in text
    for stage in ("attribute", "relight", "complete"):
        assert f"'{stage}': '" in text  # mean and p95 seconds per stage
    assert re.search(r"shards/\d{5}/samples/img_\d{3}/uv\.png", text)  # the outputs map through SQL
    assert "age" in text and "yaw" in text and "gender" in text


def test_notebook_on_an_s3_run(finished_run, venv_kernel, s3_bucket, monkeypatch):
    endpoint, bucket, fs = s3_bucket
    fs.put(str(finished_run["output"]) + "/", f"{bucket}/runs/nb/", recursive=True)
    monkeypatch.setenv("FFHQ_UV_RUN", f"s3://{bucket}/runs/nb")
    monkeypatch.setenv("FFHQ_UV_ENDPOINT_URL", endpoint)
    text, figures = _outputs(_execute(venv_kernel))
    assert f"run        s3://{bucket}/runs/nb" in text
    assert "8 ok, 2 failed, 0 filtered" in text
    assert len(figures) == 4
