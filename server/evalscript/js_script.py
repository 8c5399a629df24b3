"""Sentinel Hub JavaScript evalscripts (V3 and V1), unmodified, behind the render contract.

The script's ``setup()`` is run once in V8 (in a worker process) to learn its inputs, outputs and
mosaicking; ``evaluate`` ships whole tiles of band values to a worker, where ``evaluatePixel``
runs per pixel inside V8. Everything the script does wrong becomes an ``EvalscriptError``
(400, an OGC exception on OGC endpoints) naming the error and line.

The simple form (a body with the bands as variables and a top-level ``return``: V1 scripts,
also sent with a ``//VERSION=3`` header) runs wrapped into ``evaluatePixel``; its bands are the
identifiers its code names, as acorn reads them (comments and strings name none).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from server.errors import EvalscriptError
from server.evalscript.contract import InputSpec, OutputSpec, Samples, SampleType
from server.evalscript.js_pool import pool
from server.evalscript.js_values import Fallback, TimeLimit, Unsupported
from server.evalscript.js_vector import VectorPlan, global_names

log = logging.getLogger(__name__)

UNITS = ("REFLECTANCE", "DN", "LINEAR_POWER")
MOSAICKING = ("SIMPLE", "ORBIT", "TILE")
MAX_USER_DATA = 1 << 20  # characters of userData JSON a script may return
_IDENTIFIER = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_VERSION3 = re.compile(r"^\s*//\s*VERSION\s*=\s*3", re.MULTILINE)
_VECTORIZE = {"enabled": True}


def set_vectorize(enabled: bool) -> None:
    """Whether scripts numpy can run exactly skip V8 (``EOTILER_JS_VECTORIZE``); for new scripts."""
    _VECTORIZE["enabled"] = enabled


def looks_like_javascript(text: str) -> bool:
    """True for a Sentinel Hub script: a VERSION header, functions or a top-level return."""
    return bool(_VERSION3.search(text) or re.search(r"\bfunction\b|\breturn\b|=>|\bvar\b|\blet\b|\bconst\b", text))


def iso_utc(when: datetime) -> str:
    """A date as Sentinel Hub gives scripts scene dates: ``YYYY-MM-DDTHH:MM:SSZ`` in UTC."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class SceneInfo:
    """What ``scenes.tiles[i]`` tells a multi-temporal script about one catalogue scene."""

    date: datetime
    cloud_coverage: float | None
    data_path: str

    def as_js(self, number: int) -> dict[str, Any]:
        """The JSON the runtime turns into a ``scenes.tiles`` entry."""
        return {
            "date": iso_utc(self.date),
            "cloudCoverage": self.cloud_coverage,
            "dataPath": self.data_path,
            "shId": number,
        }


def orbits(scenes: list[SceneInfo]) -> list[list[int]]:
    """Scene indices grouped per acquisition day (Sentinel Hub's ORBIT is one sample per day)."""
    groups: dict[str, list[int]] = {}
    for i, scene in enumerate(scenes):
        groups.setdefault(scene.date.astimezone(UTC).date().isoformat(), []).append(i)
    return list(groups.values())


def scenes_meta(scenes: list[SceneInfo], mosaicking: str) -> dict[str, Any]:
    """The scene list as the JS runtime builds ``scenes.tiles`` / ``scenes.orbits`` from it."""
    meta: dict[str, Any] = {"mosaicking": mosaicking, "scenes": [s.as_js(i) for i, s in enumerate(scenes)]}
    if mosaicking == "ORBIT":
        days = []
        for group in orbits(scenes):
            day = datetime.combine(scenes[group[0]].date.astimezone(UTC).date(), datetime.min.time(), UTC)
            days.append({"dateFrom": iso_utc(day), "dateTo": iso_utc(day + timedelta(days=1)), "tiles": group})
        meta["orbits"] = days
    return meta


def _parse_inputs(value: object, v1_bands: list[str] | None) -> InputSpec:
    if v1_bands is not None:
        return InputSpec(tuple(v1_bands), "DEFAULT")
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise EvalscriptError("setup().input must list band names")
    if all(isinstance(b, str) for b in value):
        bands, units = list(value), "DEFAULT"
    elif len(value) == 1 and isinstance(value[0], dict):
        bands, units = value[0].get("bands"), value[0].get("units", "DEFAULT")
    else:
        raise EvalscriptError("setup().input: one input object (data fusion is not supported)")
    if not isinstance(bands, list) or not bands or not all(isinstance(b, str) and _IDENTIFIER.match(b) for b in bands):
        raise EvalscriptError("setup().input.bands must be a non-empty list of band names")
    if isinstance(units, list):
        if len(units) != len(bands) or not all(isinstance(u, str) for u in units):
            raise EvalscriptError("setup().input.units: one unit per band")
        per_band = tuple(u.upper() for u in units)
    elif isinstance(units, str):
        per_band = tuple(units.upper() for _ in bands)
    else:
        raise EvalscriptError("setup().input.units must be a unit name or a list of them")
    bad = [u for u in per_band if u not in (*UNITS, "DEFAULT")]
    if bad:
        raise EvalscriptError(f"setup().input.units: unknown unit {bad[0][:32]!r} (REFLECTANCE, DN, LINEAR_POWER)")
    units_value: str | tuple[str, ...] = per_band[0] if len(set(per_band)) == 1 else per_band
    return InputSpec(tuple(bands), units_value)


def _parse_output(value: object) -> dict[str, OutputSpec]:
    """Every output ``setup()`` declares, by id, in declaration order."""
    outputs = value if isinstance(value, list) else [value]
    found: dict[str, OutputSpec] = {}
    for entry in outputs:
        if not isinstance(entry, dict) or not isinstance(entry.get("bands"), int) or not 1 <= entry["bands"] <= 64:
            raise EvalscriptError("setup().output.bands must be an integer from 1 to 64")
        output_id = str(entry.get("id", "default"))
        try:
            sample_type = SampleType(str(entry.get("sampleType", "AUTO")).upper())
        except ValueError:
            raise EvalscriptError(
                "setup().output.sampleType must be AUTO, UINT8, UINT16, INT8, INT16 or FLOAT32"
            ) from None
        found[output_id] = OutputSpec(entry["bands"], sample_type, output_id)
    if not found:
        raise EvalscriptError("setup().output declares no output")
    return found


def _primary(outputs: dict[str, OutputSpec]) -> OutputSpec:
    """The output maps and coverages draw: ``default``, else the first declared one."""
    return outputs.get("default") or next(iter(outputs.values()))


def script_version(source: str, outline: dict[str, Any] | None) -> int:
    """3 for a script defining ``evaluatePixel``, 1 for the simple form Sentinel Hub also runs.

    The simple form is a body evaluated per pixel with the bands as variables, ending in a
    top-level ``return``: V1 scripts, and scripts with a ``//VERSION=3`` header but no
    ``setup()``. A top-level ``return`` is a syntax error in any script that defines
    ``evaluatePixel``, so it decides; without one, the header or the name ``evaluatePixel``
    makes a V3 script. ``outline`` is None for text acorn cannot parse: then the name alone
    decides, and compiling the script in V8 reports the error.
    """
    if outline is None:
        return 3 if re.search(r"\bevaluatePixel\b", source) else 1
    if outline["topLevelReturn"]:
        return 1
    return 3 if _VERSION3.search(source) or "evaluatePixel" in outline["names"] else 1


class JavaScriptEvalscript:
    """A Sentinel Hub evalscript run in V8 worker processes."""

    def __init__(
        self,
        source: str,
        name: str,
        band_names: Collection[str],
        parameter: str | None = None,
        require_default: bool = True,
    ) -> None:
        """``require_default``: maps and coverages draw the ``default`` output, so a script without
        one is refused; the Process and Statistical APIs name outputs by id and pass False."""
        self.source = source
        self.name = name
        self.parameter = parameter  # the request parameter the script came in, named in errors
        self.digest = hashlib.sha256(source.encode("utf-8")).hexdigest()
        self._v1_bands: list[str] | None = None
        outline = self._job("outline", {})
        self.version = script_version(source, outline)
        if self.version == 1:
            # the identifiers the code names; words of the text only when acorn gave up on it
            read = set(outline["names"]) if outline is not None else set(re.findall(r"[A-Za-z_$][\w$]*", source))
            self._v1_bands = [b for b in sorted(set(band_names) - {"dataMask"}) if b in read]
            self._v1_bands += ["dataMask"] if "dataMask" in read else []
        self.plan: VectorPlan | None = None
        # how evaluatePixel runs, and why not with numpy (js_vector.py)
        self.runtime = "v8: vectorising is switched off"
        ast = None
        if _VECTORIZE["enabled"]:
            ast = self._job("parse", {})
            if ast is None:
                self.runtime = "v8: too large or too deeply nested to vectorise (or not valid JavaScript)"
        names = global_names(ast)
        info = self._job("setup", {} if names is None else {"globals": names})
        if not info.get("hasEvaluatePixel"):
            raise EvalscriptError(f"{name}: the script defines no evaluatePixel()")
        if self._v1_bands == []:  # checked after setup, which reports a syntax error with its line
            raise EvalscriptError(f"{name}: the V1 script reads no band of this collection")
        self.has_preprocess = bool(info.get("hasPreProcessScenes"))
        self.has_output_metadata = bool(info.get("hasUpdateOutputMetadata"))
        setup = info.get("setup") if self.version == 3 else {}
        if self.version == 3 and not isinstance(setup, dict):
            raise EvalscriptError(f"{name}: setup() must return an object with 'input' and 'output'")
        assert isinstance(setup, dict)
        self.inputs = _parse_inputs(setup.get("input"), self._v1_bands)
        if self.version == 1:
            bands = self._job("probe", {"names": list(self.inputs.bands)})
            if not isinstance(bands, int) or not 1 <= bands <= 64:
                raise EvalscriptError(f"{name}: the V1 script must return an array of 1 to 64 values")
            self.outputs = {"default": OutputSpec(bands, SampleType.AUTO)}
        else:
            self.outputs = _parse_output(setup.get("output"))
            if require_default and "default" not in self.outputs:
                raise EvalscriptError(f"{name}: setup().output has no 'default' output (maps draw only that one)")
        self.output = _primary(self.outputs)
        self.output_ids = tuple(self.outputs)
        mosaicking = str(setup.get("mosaicking", "SIMPLE")).upper()
        if mosaicking not in MOSAICKING:
            raise EvalscriptError(f"{name}: setup().mosaicking must be SIMPLE, ORBIT or TILE")
        self.mosaicking = mosaicking
        if ast is not None:
            self._vectorise(ast, names, info.get("globals"))

    def for_output(self, output_id: str) -> JavaScriptEvalscript:
        """The same script rendering its output ``output_id`` (the Process and Statistical APIs
        ask for outputs by id); its digest differs, so cache keys tell the outputs apart.

        Only the primary output has the numpy plan (built for it); another output runs in V8,
        which picks it from what ``evaluatePixel`` returns.
        """
        if output_id == self.output.id:
            return self
        view = copy.copy(self)
        view.output = self.outputs[output_id]
        view.digest = hashlib.sha256(f"{self.digest}\0{output_id}".encode()).hexdigest()
        view.plan, view.runtime = None, f"v8: output '{output_id}' of a multi-output script"
        return view

    def _vectorise(self, ast: dict[str, Any], names: list[str] | None, report: dict[str, Any] | None) -> None:
        """Build the numpy plan when the script allows one; ``runtime`` says which runs and why."""
        self.runtime = "v8: not a script the vectoriser reproduces"
        if self.mosaicking != "SIMPLE":
            self.runtime = f"v8: mosaicking {self.mosaicking} (samples over time)"
        if names is None or report is None or self.mosaicking != "SIMPLE":
            return
        try:
            self.plan = VectorPlan.build(ast, report, self.inputs.bands, self.output)
            self.runtime = "numpy"
        except Unsupported as exc:
            self.runtime = f"v8: {exc}"
        except Exception as exc:  # noqa: BLE001 - the numpy runtime is optional; V8 runs any script
            log.warning("%s: not vectorised (%s: %s)", self.name, type(exc).__name__, str(exc)[:200])
            self.runtime = f"v8: {type(exc).__name__}"

    def _job(
        self, kind: str, meta: dict[str, Any], payload: list[np.ndarray] | None = None, out: np.ndarray | None = None
    ) -> Any:
        meta = {**meta, "digest": self.digest, "source": self.source, "v1_bands": self._v1_bands}
        try:
            return pool().run(kind, meta, payload, out)
        except EvalscriptError as exc:
            raise EvalscriptError(f"{self.name}: {exc.public_message}", parameter=self.parameter) from None

    def preprocess(self, scenes: list[SceneInfo], start: datetime | None, end: datetime | None) -> list[int]:
        """Indices (into the orbit or tile list) of the entries ``preProcessScenes`` keeps."""
        meta = scenes_meta(scenes, self.mosaicking)
        meta["from"] = (start or min((s.date for s in scenes), default=datetime.now(UTC))).isoformat()
        meta["to"] = (end or datetime.now(UTC)).isoformat()
        kept = self._job("preprocess", {"scenes_meta": meta})
        if not isinstance(kept, list):
            raise EvalscriptError(f"{self.name}: preProcessScenes returned no scene list")
        return [int(i) for i in kept]

    def output_metadata(self, scenes: list[SceneInfo]) -> Any:
        """What ``updateOutputMetadata`` sets as ``outputMetadata.userData`` once the image is drawn
        from ``scenes`` (``{}`` when the script has no such function), as parsed JSON."""
        if not self.has_output_metadata:
            return {}
        form = "TILE" if self.mosaicking == "SIMPLE" else self.mosaicking
        text = self._job("metadata", {"scenes_meta": scenes_meta(scenes, form)})
        if not isinstance(text, str) or len(text) > MAX_USER_DATA:
            raise EvalscriptError(
                f"{self.name}: outputMetadata.userData must be JSON of at most {MAX_USER_DATA} characters",
                parameter=self.parameter,
            )
        return json.loads(text)

    def evaluate(self, samples: Samples) -> np.ndarray:
        """Run ``evaluatePixel`` over every pixel; returns (bands, h, w) float32.

        Values are computed in double precision and rounded to float32 once, at the end, as
        ``stack_output`` does for numpy scripts (post-processing works in float32).

        Vectorised with numpy when the script allows it (``js_vector.py``), else in V8; a tile
        whose data leaves the vectorised path (an index out of range...) runs in V8 too.
        """
        names = list(self.inputs.bands)
        if self.plan is not None:
            out = np.empty((self.output.bands, *samples.shape[-2:]), dtype=np.float32)
            arrays = {name: np.asarray(samples[name], dtype=np.float64) for name in names}
            try:
                self.plan.evaluate(arrays, out, pool().limits.for_pixels(out.shape[-1] * out.shape[-2]))
                return out
            except Fallback:
                pass
            except TimeLimit as exc:
                raise EvalscriptError(f"{self.name}: {exc}", parameter=self.parameter) from None
            except Exception as exc:  # noqa: BLE001 - never a 500: V8 is always there to run the script
                log.warning("%s: vectorised evaluation failed (%s); running it in V8 from now on", self.name, exc)
                self.plan, self.runtime = None, f"v8: {type(exc).__name__}"
        arrays = [np.asarray(samples[name], dtype=np.float64) for name in names]
        temporal = self.mosaicking != "SIMPLE"
        shape = samples.shape[-2:]
        pixels = int(shape[0] * shape[1])
        count = arrays[0].shape[0] if temporal else 1
        # layout [sample][band][pixel]: band arrays as they are, or one slice per sample
        payload = [arr[k] for k in range(count) for arr in arrays] if temporal else arrays
        out = np.empty((self.output.bands, *shape), dtype=np.float32)
        eval_meta: dict[str, Any] = {
            "names": names,
            "n": pixels,
            "bands": self.output.bands,
            "outputId": self.output.id,
            "mosaicking": self.mosaicking,
            "samples": count,
        }
        if temporal:
            eval_meta.update(scenes_meta(samples.scenes or [], self.mosaicking))
        meta = {"in_length": sum(a.size for a in payload), "out_length": out.size, "eval_meta": eval_meta}
        self._job("evaluate", meta, payload, out)
        return out
