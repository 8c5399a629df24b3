import numpy as np
import pytest

from server.errors import EvalscriptError
from server.evalscript.contract import Samples, SampleType
from server.evalscript.expression import ExpressionEvalscript

BANDS = {"B04", "B08", "SCL"}


def samples(**arrays):
    shape = np.asarray(next(iter(arrays.values()))).shape
    return Samples(
        {
            **{k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()},
            "dataMask": np.ones(shape, dtype=np.float32),
        }
    )


def test_expression_evaluates_with_numexpr():
    script = ExpressionEvalscript("(B08 - B04) / (B08 + B04)", BANDS)
    assert script.inputs.data_bands == ("B04", "B08")
    assert script.output.sample_type is SampleType.FLOAT32
    out = script.evaluate(samples(B04=[[0.1, 0.2]], B08=[[0.3, 0.2]]))
    np.testing.assert_allclose(out[0], [[0.5, 0.0]], atol=1e-6)


def test_multi_band_rescaled_expression():
    script = ExpressionEvalscript("B04; B08; where(SCL == 4, 1, 0)", BANDS, rescale=(0, 0.5))
    assert script.output.bands == 3 and script.output.sample_type is SampleType.AUTO
    out = script.evaluate(samples(B04=[[0.25]], B08=[[1.0]], SCL=[[4]]))
    np.testing.assert_allclose(out[:, 0, 0], [0.5, 1.0, 1.0])


def test_colormap_expression_returns_rgba():
    script = ExpressionEvalscript("B08", BANDS, rescale=(0, 1), colormap="viridis")
    assert script.output.bands == 4
    out = script.evaluate(samples(B08=[[0.0, 1.0]]))
    assert out.shape == (4, 1, 2) and np.allclose(out[3], 1.0)
    assert not np.allclose(out[:3, 0, 0], out[:3, 0, 1])


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os').system('id')",
        "B04.__class__",
        "open('/etc/passwd')",
        "B04 if B08 else 0",
        "[B04]",
        "lambda: 1",
        "B05 + 1",
        "'text'",
        "B04 and B08",
        "sqrt(B04, x=1)",
        "B04[0]",
        "True + B04",
        "getattr(B04, 'x')",
        "(B04 := 1)",
        "",
    ],
)
def test_whitelist_refuses(expr):
    with pytest.raises(EvalscriptError):
        ExpressionEvalscript(expr, BANDS)


def test_expression_size_limit():
    with pytest.raises(EvalscriptError):
        ExpressionEvalscript("+".join(["B04"] * 1000), BANDS)


def test_unknown_colormap_and_missing_rescale():
    with pytest.raises(EvalscriptError):
        ExpressionEvalscript("B04", BANDS, rescale=(0, 1), colormap="nope")
    with pytest.raises(EvalscriptError):
        ExpressionEvalscript("B04", BANDS, colormap="viridis")
