"""``updateOutputMetadata`` in the project's Python script form: the same hook as a JavaScript
V3 script, run by the pipeline once per image with the scenes that drew it."""

from __future__ import annotations

from pathlib import Path

from rasterio.crs import CRS

from server.evalscript.python_script import PythonEvalscript
from server.models import Grid, ImageFormat, RenderRequest, parse_time
from server.pipeline import Pipeline
from server.render.outputs import OutputsRequest

SCRIPT = '''
def setup():
    return {"input": ["B04", "dataMask"], "output": {"bands": 1, "sampleType": "FLOAT32"}}


def evaluatePixel(samples):
    return [samples.B04]


def updateOutputMetadata(scenes, inputMetadata, outputMetadata):
    outputMetadata["userData"] = {
        "dates": [tile["date"] for tile in scenes["tiles"]],
        "factor": inputMetadata["normalizationFactor"],
    }
'''


def test_python_script_user_data_names_the_scene_that_drew_the_image(pipeline: Pipeline, tmp_path: Path):
    path = tmp_path / "dated.py"
    path.write_text(SCRIPT)
    script = PythonEvalscript(path)
    grid = Grid((508000, 5880000, 518000, 5886000), CRS.from_epsg(32629), 50, 30)
    base = RenderRequest("TRUE_COLOR", grid, ImageFormat.GTIFF, time=parse_time("2022-10"), script=script)
    image, user_data = pipeline.render(OutputsRequest(base, (base,), user_data=True))
    assert image.media_type == "image/tiff" and image.scenes == user_data.scenes
    assert user_data.media_type == "application/json"
    # the sample's one scene of October 2022 there: S2A_MSIL2A_20221005T115411
    assert user_data.content == b'{"dates":["2022-10-05T11:54:11Z"],"factor":0.0001}'
