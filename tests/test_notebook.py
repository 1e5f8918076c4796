"""The Colab notebook runs headless, top to bottom, with tiny settings, so it cannot rot."""
import pytest

from conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "Image_Coloring_using_Transfer_Learning.ipynb"


def test_notebook_executes(tmp_path, tiny_checkpoint):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    params = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1
    # the defaults otherwise: the run starts from the bundled model, so nothing is downloaded (this machine is offline)
    overrides = (f'EPOCHS = 1\nIMAGE_SIZE = 32\nBATCH_SIZE = 4\nDEVICE = "cpu"\n'
                 f'RUN_DIR = r"{tmp_path / "run"}"\n')
    nb.cells.insert(params[0] + 1, nbformat.v4.new_code_cell(overrides))
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    assert (tmp_path / "run" / "best.pt").is_file()
    outputs = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "sizes kept: True" in outputs
    assert "48 frames colourised, new shot at frame(s) [28]" in outputs
