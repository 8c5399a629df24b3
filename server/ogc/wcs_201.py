"""WCS 2.0.1 GetCoverage (core + CRS, scaling, range subsetting and interpolation extensions).

Parsed once, straight into the ``RenderRequest``: one SUBSET per axis (by axis label, in
SUBSETTINGCRS), OUTPUTCRS, SCALESIZE / SCALEFACTOR / SCALEAXES / SCALEEXTENT, RANGESUBSET and
INTERPOLATION; what both versions share is in ``wcs.py``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rasterio.crs import CRS

from server.api.params import parse_int, parse_size
from server.errors import InvalidParameter, InvalidTime
from server.models import RenderRequest, TimeRange, check_bbox, parse_time, request_grid
from server.ogc.crs import normalise_code, parse_crs
from server.ogc.kvp import KVP
from server.ogc.wcs import (
    NATIVE_CRS,
    T_AXES,
    X_AXES,
    Y_AXES,
    InvalidAxisLabel,
    InvalidSubsetting,
    band_names,
    check_size,
    common_options,
    coverage_domain,
    coverage_layer,
    native_size,
    parse_coverage_format,
    parse_interpolation,
    pixel_count,
    positive,
    transform_box,
)
from server.pipeline import Pipeline

_SUBSET = re.compile(r"^\s*(?P<axis>[A-Za-z_][\w.-]*)\s*(?:,\s*(?P<crs>[^()]+?)\s*)?\((?P<body>[^()]*)\)\s*$")


@dataclass(slots=True)
class _Subsets:
    x: tuple[float | None, float | None] = (None, None)
    y: tuple[float | None, float | None] = (None, None)
    time: TimeRange | None = None
    crs_text: str | None = None


def _number(text: str, axis: str) -> float | None:
    text = text.strip().strip('"')
    if text == "*":
        return None
    try:
        value = float(text)
    except ValueError:
        raise InvalidSubsetting(f"SUBSET {axis}: '{text[:30]}' is not a number", parameter="SUBSET") from None
    if not math.isfinite(value):
        raise InvalidSubsetting(f"SUBSET {axis}: bounds must be finite", parameter="SUBSET")
    return value


def parse_subsets(values: list[str]) -> _Subsets:
    """``SUBSET=Long(5,6)``, ``SUBSET=Lat(45,46)``, ``SUBSET=time("2022-10-01","2022-10-31")``."""
    result = _Subsets()
    seen: set[str] = set()
    for value in values:
        match = _SUBSET.match(value)
        if not match:
            raise InvalidSubsetting(f"SUBSET '{value[:60]}' must look like axis(low,high)", parameter="SUBSET")
        label = match["axis"].lower()
        kind = "x" if label in X_AXES else "y" if label in Y_AXES else "time" if label in T_AXES else None
        if kind is None:
            raise InvalidAxisLabel(
                f"SUBSET axis '{match['axis'][:20]}' is not an axis of the coverage (Lat, Long, time)",
                parameter="SUBSET",
            )
        if kind in seen:
            raise InvalidSubsetting(f"SUBSET gives axis {match['axis']} twice", parameter="SUBSET")
        seen.add(kind)
        if match["crs"]:
            result.crs_text = match["crs"]
        parts = [p.strip() for p in match["body"].split(",")]
        if kind == "time":
            texts = ["" if p.strip('"') == "*" else p.strip('"') for p in parts]
            if len(texts) not in (1, 2) or not any(texts):
                raise InvalidSubsetting("SUBSET time takes (instant) or (start,end)", parameter="SUBSET")
            try:
                result.time = parse_time("/".join(texts), "SUBSET")
            except InvalidTime as exc:
                raise InvalidSubsetting(exc.public_message, parameter="SUBSET") from None
            continue
        if len(parts) != 2:
            raise InvalidSubsetting(
                f"SUBSET {match['axis']}: slicing a spatial axis is not supported; give (low,high)",
                parameter="SUBSET",
            )
        low, high = _number(parts[0], label), _number(parts[1], label)
        if low is not None and high is not None and low > high:
            raise InvalidSubsetting(f"SUBSET {match['axis']}: low must be below high", parameter="SUBSET")
        if kind == "x":
            result.x = (low, high)
        else:
            result.y = (low, high)
    return result


def _axis_values(text: str, parameter: str) -> dict[str, str]:
    """``x(256),y(128)`` or ``Long(0:10)`` -> {"x": "256", ...} keyed by x/y."""
    found: dict[str, str] = {}
    for item in re.findall(r"[^,()]+\([^()]*\)", text) or [text]:
        match = re.fullmatch(r"\s*([A-Za-z_][\w.-]*)\s*\(([^()]*)\)\s*", item)
        if not match:
            raise InvalidParameter(f"{parameter} must look like axis(value),axis(value)", parameter=parameter)
        label = match[1].lower()
        kind = "x" if label in X_AXES | {"i"} else "y" if label in Y_AXES | {"j"} else None
        if kind is None:
            raise InvalidAxisLabel(f"{parameter}: unknown axis '{match[1][:20]}'", parameter=parameter)
        found[kind] = match[2]
    return found


def _scaled_size(kvp: KVP, native: tuple[int, int], pipeline: Pipeline) -> tuple[int, int]:
    """Output size from SCALESIZE / SCALEFACTOR / SCALEAXES / SCALEEXTENT, else the native size."""
    width, height = native
    given = [name for name in ("SCALESIZE", "SCALEFACTOR", "SCALEAXES", "SCALEEXTENT") if kvp.get(name)]
    if len(given) > 1:
        raise InvalidParameter(f"give only one of {', '.join(given)}", parameter=given[1])
    limit = pipeline.settings.max_image_size
    if kvp.get("SCALESIZE"):
        sizes = _axis_values(str(kvp.get("SCALESIZE")), "SCALESIZE")
        width = parse_size(sizes.get("x", str(width)), "SCALESIZE", limit)
        height = parse_size(sizes.get("y", str(height)), "SCALESIZE", limit)
    elif kvp.get("SCALEFACTOR"):
        # The scaling extension multiplies the grid (MapServer does the same): 2 doubles each
        # side, 0.5 halves it.
        factor = positive(str(kvp.get("SCALEFACTOR")), "SCALEFACTOR")
        width, height = pixel_count(width * factor), pixel_count(height * factor)
    elif kvp.get("SCALEAXES"):
        factors = _axis_values(str(kvp.get("SCALEAXES")), "SCALEAXES")
        width = pixel_count(width * positive(factors.get("x", "1"), "SCALEAXES"))
        height = pixel_count(height * positive(factors.get("y", "1"), "SCALEAXES"))
    elif kvp.get("SCALEEXTENT"):
        extents = _axis_values(str(kvp.get("SCALEEXTENT")), "SCALEEXTENT")
        for kind, text in extents.items():
            low, _, high = text.partition(":")
            size = parse_int(high.strip(), "SCALEEXTENT", 0, 10**9) - parse_int(low.strip(), "SCALEEXTENT", 0, 10**9)
            if kind == "x":
                width = size + 1
            else:
                height = size + 1
    hint = "use SCALESIZE or a SCALEFACTOR below 1, or a smaller SUBSET"
    check_size(width, height, pipeline, hint, given[0] if given else "SUBSET")
    return width, height


def parse_get_coverage_201(kvp: KVP, pipeline: Pipeline, allowed_crs: tuple[str, ...]) -> RenderRequest:
    """WCS 2.0.1 GetCoverage (core + CRS, scaling, range subsetting and interpolation extensions)."""
    layer = coverage_layer(pipeline, kvp.require("COVERAGEID"), "COVERAGEID")
    domain = coverage_domain(layer)
    common = common_options(kvp, layer)
    fmt = parse_coverage_format(kvp.get("FORMAT") or "image/tiff")
    media = (kvp.get("MEDIATYPE") or "").strip().lower()
    if media and media != "image/tiff":
        raise InvalidParameter(
            "MEDIATYPE multipart/related is not offered; omit it for image/tiff", parameter="MEDIATYPE"
        )
    subsets = parse_subsets(kvp.get_all("SUBSET"))
    subsetting_text = kvp.get("SUBSETTINGCRS") or subsets.crs_text or NATIVE_CRS
    _, subsetting_crs = parse_crs(subsetting_text, (*allowed_crs, NATIVE_CRS), "SUBSETTINGCRS")
    output_code = normalise_code(kvp.get("OUTPUTCRS") or NATIVE_CRS)
    _, output_crs = parse_crs(output_code, (*allowed_crs, NATIVE_CRS), "OUTPUTCRS")
    full = domain.bbox
    if subsetting_crs != CRS.from_user_input(NATIVE_CRS):
        full = transform_box(CRS.from_user_input(NATIVE_CRS), subsetting_crs, full, "SUBSET")
    x0 = subsets.x[0] if subsets.x[0] is not None else full[0]
    x1 = subsets.x[1] if subsets.x[1] is not None else full[2]
    y0 = subsets.y[0] if subsets.y[0] is not None else full[1]
    y1 = subsets.y[1] if subsets.y[1] is not None else full[3]
    # A trim with low == high (GDAL probes the service that way) covers the one native pixel there.
    half = (domain.resolution if subsetting_crs.is_geographic else layer.native_resolution) / 2
    if x0 == x1:
        x0, x1 = x0 - half, x1 + half
    if y0 == y1:
        y0, y1 = y0 - half, y1 + half
    if x0 >= x1 or y0 >= y1:
        raise InvalidSubsetting("SUBSET leaves an empty area", parameter="SUBSET")
    bbox = (x0, y0, x1, y1)
    try:
        check_bbox(bbox, subsetting_crs, "SUBSET")
    except InvalidParameter as exc:  # WCS 2.0.1's code for a trim outside the coverage's space
        raise InvalidSubsetting(exc.public_message, parameter="SUBSET") from None
    if subsetting_crs != output_crs:
        bbox = transform_box(subsetting_crs, output_crs, bbox, "SUBSET")
    native = native_size(bbox, output_crs, domain, layer)
    width, height = _scaled_size(kvp, native, pipeline)
    time = subsets.time if subsets.time is not None else common.time
    return RenderRequest(
        layer.id,
        request_grid(bbox, output_crs, width, height, "SUBSET"),
        fmt,
        time,
        maxcc=common.maxcc,
        priority=common.priority,
        script=common.script,
        coverage=True,
        bands=common.band_subset(parse_range_subset(kvp.get("RANGESUBSET"), common.bands)),
        resampling=parse_interpolation(kvp.get("INTERPOLATION")),
    )


def parse_range_subset(value: str | None, count: int) -> tuple[int, ...] | None:
    """``band_1,band_3`` or ``band_1:band_2`` (WCS 2.0 range subsetting) -> 0-based band indices."""
    if value is None or not value.strip():
        return None
    names = [n.lower() for n in band_names(count)]
    picked: list[int] = []
    for item in value.split(","):
        low, sep, high = item.strip().partition(":")
        try:
            first = names.index(low.strip().lower())
            last = names.index(high.strip().lower()) if sep else first
        except ValueError:
            raise InvalidParameter(
                f"RANGESUBSET names unknown bands; the coverage has {', '.join(band_names(count))}",
                parameter="RANGESUBSET",
            ) from None
        if last < first:
            raise InvalidParameter("RANGESUBSET range runs backwards", parameter="RANGESUBSET")
        picked.extend(range(first, last + 1))
    return tuple(picked)
