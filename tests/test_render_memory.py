"""Memory of one render's evaluation: the script's float64 inputs do not outlive the script.

Python evalscripts see their samples in double precision (8 bytes a pixel and band); the
inputs the script's result does not hold are freed before its output is stacked, so the
evaluation's peak is the script's own, not the script's plus the (bands, h, w) stack. Counted
with tracemalloc (numpy reports its buffers to it), on the shipped true colour script.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server.evalscript.contract import Samples
from server.evalscript.python_script import PythonEvalscript
from tests.test_render_arithmetic import SIZE, peak_bytes

ROOT = Path(__file__).resolve().parents[1]


def test_true_colour_evaluation_frees_its_float64_inputs_before_stacking():
    script = PythonEvalscript(ROOT / "evalscripts" / "true_color.py")
    rng = np.random.default_rng(7)
    bands = {name: rng.uniform(0, 0.4, (SIZE, SIZE)).astype(np.float32) for name in ("B02", "B03", "B04")}
    samples = Samples({**bands, "dataMask": np.ones((SIZE, SIZE), np.float32)})
    values = script.evaluate(samples)
    expected = [2.5 * bands["B04"].astype(np.float64), 2.5 * bands["B03"].astype(np.float64)]
    expected += [2.5 * bands["B02"].astype(np.float64), np.ones((SIZE, SIZE))]
    assert values.dtype == np.float32
    assert np.array_equal(values, np.stack(expected).astype(np.float32))
    plane = SIZE * SIZE * 8  # one float64 band
    inputs, results, stack = 4 * plane, 3 * plane, 4 * plane // 2
    peak = peak_bytes(lambda: script.evaluate(samples))
    # The script's peak: its float64 inputs and its three new bands (dataMask is returned as is).
    assert peak <= inputs + results + plane // 4, f"{peak / 2**20:.1f} MB"
    assert peak < inputs + results + stack  # what it is while the inputs outlive the script
