"""The numpy and JavaScript twins of a coloured index keep their colour stops in one place: the
``.js`` file. Editing its ramp changes what the ``.py`` twin draws, and its digest (cache keys)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from server.errors import ConfigError
from server.evalscript.contract import Samples
from server.evalscript.python_script import PythonEvalscript

EVALSCRIPTS = Path(__file__).resolve().parent.parent / "evalscripts"


def ndvi_pixels(script: PythonEvalscript, ndvi: np.ndarray) -> np.ndarray:
    """The script's output for pixels of the given NDVI (B04 = 0.1, B08 chosen to match)."""
    red = np.full(ndvi.shape, 0.1)
    nir = red * (1 + ndvi) / (1 - ndvi)
    return script.evaluate(Samples({"B04": red, "B08": nir, "dataMask": np.ones(ndvi.shape)}))


def test_the_numpy_twin_draws_the_ramp_of_its_javascript_twin(tmp_path: Path) -> None:
    for suffix in (".py", ".js"):
        shutil.copy(EVALSCRIPTS / f"ndvi{suffix}", tmp_path / f"ndvi{suffix}")
    shipped = PythonEvalscript(tmp_path / "ndvi.py")
    ndvi = np.array([[0.0, 0.5, 0.9]])
    js = (tmp_path / "ndvi.js").read_text()
    js = js.replace("const STOPS = [-0.5, 0.0, 0.2, 0.4, 0.6, 1.0];", "const STOPS = [-1.0, 1.0];")
    js = js.replace("[0x0c0c0c, 0xeaeaea, 0x91bf51, 0x4f892d, 0x0f540a, 0x004400]", "[0x000000, 0xff0000]")
    (tmp_path / "ndvi.js").write_text(js)
    edited = PythonEvalscript(tmp_path / "ndvi.py")
    got = ndvi_pixels(edited, ndvi)
    # black at -1 to red at +1, linear: red = (ndvi + 1) / 2, no green or blue
    np.testing.assert_allclose(got[0], (ndvi + 1) / 2, atol=1e-9)
    assert not got[1].any() and not got[2].any()
    assert edited.digest != shipped.digest  # cached images of the old ramp are not served
    assert not np.allclose(ndvi_pixels(shipped, ndvi)[:3], got[:3])


def test_a_twin_without_a_ramp_is_a_configuration_error(tmp_path: Path) -> None:
    shutil.copy(EVALSCRIPTS / "ndvi.py", tmp_path / "ndvi.py")
    (tmp_path / "ndvi.js").write_text("//VERSION=3\nconst STOPS = [0, 1];\n")
    with pytest.raises(ConfigError, match="COLORS"):
        PythonEvalscript(tmp_path / "ndvi.py")
