"""The notebooks in notebooks/ run headlessly, top to bottom, at a small size (nbclient)."""

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name, tmp_path, monkeypatch, **env):
    # The kernel inherits this process's environment: the notebooks read their size and work dir from it.
    monkeypatch.setenv("TFREC_VIDEO_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("TFREC_VIDEO_NOTEBOOK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    return notebook


def _outputs(notebook):
    return "\n".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for out in cell.get("outputs", []))


def test_notebooks_are_committed_without_outputs():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        notebook = nbformat.read(path, as_version=4)
        assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), path.name


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    notebook = _execute("quickstart.ipynb", tmp_path, monkeypatch)
    text = _outputs(notebook)
    assert "retrieval.recall@100" in text and "p(click)=" in text
    images = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])
              if "image/png" in out.get("data", {})]
    assert len(images) == 3
    assert (tmp_path / "work" / "saved_models" / "video_rec" / "1" / "saved_model.pb").exists()


PRETRAINED = Path(__file__).resolve().parents[2] / "shared" / "pretrained"


@pytest.mark.slow
def test_bring_your_own_data_notebook_executes(tmp_path, monkeypatch):
    # The real MobileNet embedder when ../shared/pretrained is there; the notebook's stand-in otherwise.
    notebook = _execute("bring_your_own_data.ipynb", tmp_path, monkeypatch, TFREC_VIDEO_PRETRAINED=str(PRETRAINED))
    text = _outputs(notebook)
    assert "new video embedding:" in text
    work = tmp_path / "work"
    assert (work / "run" / "report.json").exists() and (work / "embeddings.parquet").exists()
    assert (work / "saved_models" / "video_rec" / "1" / "saved_model.pb").exists()
    if PRETRAINED.exists():
        assert "mobilenet" in text
