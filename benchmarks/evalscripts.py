"""Evalscript cost: the same scripts as numpy (Python) and as Sentinel Hub JavaScript (V8).

For true colour, an index with ``colorBlend`` and a multi-output script, on real 256 px Web
Mercator tiles of the bundled sample, it reports per tile:

- ``eval_ms``: the evaluation step alone (``script.evaluate`` on bands already read). JavaScript
  is measured twice: as the server runs it (``javascript``: vectorised with numpy when the
  script allows, ``server/evalscript/js_vector.py``) and forced into V8 (``javascript_v8``,
  which includes shipping the bands to a V8 worker process and back);
- ``tile_ms``: a whole uncached tile (catalogue, read, evaluate, post-process, PNG encode);
- ``eval_share``: eval_ms / tile_ms, and ``js_vs_numpy``: JS eval_ms / numpy eval_ms.

The bundled T29UNU product has no 10 m B08, so the index is NDVI on B8A (narrow NIR); the cost
does not depend on which band is read. Run: ``python benchmarks/evalscripts.py [--repeat N]``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml
from harness import ROOT, write_report
from rich.progress import Progress

from server.catalog.layers import LayerRegistry
from server.config import load_config
from server.evalscript.contract import Samples
from server.evalscript.js_script import set_vectorize
from server.grids import get_tms, tile_grid
from server.models import ImageFormat, RenderRequest, parse_time
from server.pipeline import Pipeline
from server.resources import default_config_path
from server.settings import Settings

TILES = [(11, 972 + dx, 666 + dy) for dx in (0, 1) for dy in (0, 1)] + [(12, 1945, 1333), (12, 1946, 1334)]
DAY = "2022-10-05"

MULTI_PY = """
from server.evalscript.helpers import index


def setup():
    return {"input": [{"bands": ["B02", "B03", "B04", "B8A", "dataMask"]}], "output": {"bands": 4}}


def evaluatePixel(samples):
    ndvi = index(samples.B8A, samples.B04)  # the second output, computed as the JS twin does
    _ = ndvi
    return [2.5 * samples.B04, 2.5 * samples.B03, 2.5 * samples.B02, samples.dataMask]
"""
MULTI_JS = """//VERSION=3
function setup() {
  return {
    input: [{ bands: ["B02", "B03", "B04", "B8A", "dataMask"] }],
    output: [{ id: "default", bands: 4 }, { id: "ndvi", bands: 1, sampleType: "FLOAT32" }],
  };
}
function evaluatePixel(s) {
  return {
    default: [2.5 * s.B04, 2.5 * s.B03, 2.5 * s.B02, s.dataMask],
    ndvi: [index(s.B8A, s.B04)],
  };
}
"""


def write_config(directory: Path) -> Path:
    """The bundled configuration plus numpy/JS pairs of each benchmarked script."""
    scripts = ROOT / "evalscripts"
    pairs = {
        "true_color": ((scripts / "true_color.py").read_text(), (scripts / "true_color.js").read_text()),
        "ndvi_colorblend": (
            (scripts / "ndvi.py").read_text().replace("B08", "B8A"),
            (scripts / "ndvi.js").read_text().replace("B08", "B8A"),
        ),
        "multi_output": (MULTI_PY, MULTI_JS),
    }
    raw = yaml.safe_load(default_config_path().read_text())
    base = default_config_path().parent
    for collection in raw["collections"].values():
        collection["catalogue"]["path"] = str((base / collection["catalogue"]["path"]).resolve())
        collection["data_root"] = str((base / collection["data_root"]).resolve())
    raw["evalscripts_dir"] = str(directory)
    raw["layers"] = {}
    for name, (py, js) in pairs.items():
        (directory / f"{name}.py").write_text(py)
        (directory / f"{name}.js").write_text(js)
        for kind in ("py", "js"):
            raw["layers"][f"{name}_{kind}"] = {
                "title": name,
                "collection": "sentinel-2-l2a",
                "evalscript": f"{name}.{kind}",
            }
    path = directory / "bench.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def measure(pipeline: Pipeline, layer_id: str, repeat: int) -> dict[str, float]:
    """Median evaluation and whole-tile milliseconds over ``TILES`` x ``repeat``."""
    layer = pipeline.registry.get(layer_id)
    evals, tiles = [], []
    for z, x, y in TILES:
        grid = tile_grid(get_tms("WebMercatorQuad"), z, x, y)
        req = RenderRequest(layer_id, grid, ImageFormat.PNG, time=parse_time(DAY))
        scenes = pipeline.find_scenes(layer, req)
        mosaic = pipeline.mosaic(layer, scenes, req.grid, layer.evalscript, None)
        arrays = {name: values.astype("float64") for name, values in mosaic.bands.items()}
        samples = Samples({**arrays, "dataMask": mosaic.filled.astype("float64")})
        layer.evalscript.evaluate(samples)  # warm-up: V8 compiles the script in each worker
        for _ in range(repeat):
            start = time.perf_counter()
            layer.evalscript.evaluate(samples)
            evals.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            rendered = pipeline.render_data(req, scenes)
            pipeline.encode(rendered.data, req, rendered.mosaic.scenes, rendered.timings)
            tiles.append((time.perf_counter() - start) * 1000)
    return {"eval_ms": round(statistics.median(evals), 2), "tile_ms": round(statistics.median(tiles), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20, help="repeats per tile")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp))
        settings = Settings(config=config, overview_cache_bytes=0, cache_memory_bytes=0)
        pipeline = Pipeline(LayerRegistry(load_config(config), settings), settings)
        set_vectorize(False)  # the same JavaScript layers again, every script in V8
        v8_pipeline = Pipeline(LayerRegistry(load_config(config), settings), settings)
        set_vectorize(True)
        results: dict[str, dict] = {}
        layers = sorted(pipeline.registry.layers)
        runs = [(pipeline, layer_id, layer_id) for layer_id in layers]
        runs += [(v8_pipeline, layer_id, f"{layer_id}_v8") for layer_id in layers if layer_id.endswith("_js")]
        with Progress() as progress:
            task = progress.add_task("evalscripts", total=len(runs))
            for owner, layer_id, key in runs:
                results[key] = measure(owner, layer_id, args.repeat)
                if layer_id.endswith("_js"):
                    results[key]["runtime"] = owner.registry.get(layer_id).evalscript.runtime  # type: ignore[assignment, attr-defined]
                progress.advance(task)
        pipeline.close()
        v8_pipeline.close()
    report: dict[str, object] = {"tiles": len(TILES), "repeat": args.repeat, "tile_px": 256, "scripts": {}}
    for name in sorted({layer_id.rsplit("_", 1)[0] for layer_id in results if layer_id.endswith("_py")}):
        py, js, v8 = results[f"{name}_py"], results[f"{name}_js"], results[f"{name}_js_v8"]
        report["scripts"][name] = {  # type: ignore[index]
            "numpy": {**py, "eval_share": round(py["eval_ms"] / py["tile_ms"], 3)},
            "javascript": {**js, "eval_share": round(js["eval_ms"] / js["tile_ms"], 3)},
            "javascript_v8": {**v8, "eval_share": round(v8["eval_ms"] / v8["tile_ms"], 3)},
            "js_vs_numpy": round(js["eval_ms"] / py["eval_ms"], 2),
            "js_v8_vs_numpy": round(v8["eval_ms"] / py["eval_ms"], 2),
        }
    write_report("evalscripts", report)


if __name__ == "__main__":
    main()
