"""Write ``BENCHMARKS.md`` from the raw numbers of ``benchmarks/bench.py``."""

from __future__ import annotations

from pathlib import Path

TARGETS = [
    ("XYZ 256 px true colour, local COG, uncached", "titiler", 0.7),
    ("XYZ 256 px NDVI, local COG, uncached", "titiler", 0.7),
    ("WMS GetMap 1024 px true colour, EPSG:3857", "mapserver", 0.5),
    ("WMS GetMap 1024 px true colour, EPSG:4326", "mapserver", 0.5),
]


def _band(values: list[float]) -> str:
    return f"{values[0]:g}-{values[1]:g}" if values[0] != values[1] else f"{values[0]:g}"


def _ratio(ratio: dict | None) -> str:
    return "" if ratio is None else f"**{ratio['p50']:g}** ({_band(ratio['band'])})"


def _request_rows(rows: list[dict]) -> list[str]:
    out = [
        "| scenario | server | p50 ms (band) | p95 ms | req/s (4 clients) | CPU ms/req | peak RSS MB "
        "| eotiler / peer (band) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row.get("s3") or "servers" not in row or "evalscripts" in row or "throughput_ratio" in row:
            continue
        for name, result in row["servers"].items():
            ratio = row["ratios"].get(name)
            title = row["scenario"] if name == "eotiler" else ""
            out.append(
                f"| {title} | {name} | {result['p50_ms']:g} ({_band(result['p50_band'])}) | {result['p95_ms']:g} "
                f"| {result['per_s']:g} | {result['cpu_ms_per_request']:g} | {result['peak_rss_mb']:g} "
                f"| {_ratio(ratio)} |"
            )
    return out


def _s3_rows(rows: list[dict]) -> list[str]:
    out = [
        "| scenario | server | cold p50 ms (max) | cold S3 requests / MB | warm p50 ms | warm S3 requests "
        "| eotiler / TiTiler, cold (band) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if not row.get("s3"):
            continue
        for name, result in row["servers"].items():
            cold, warm = (result["cold"], result["warm"]) if "cold" in result else (result, None)
            ratio = row["ratios"].get("titiler") if name == "eotiler" else None
            title = row["scenario"] if name == next(iter(row["servers"])) else ""
            if "spellings" in row and title:  # AWS_* / EOTILER_S3_* instead of a peer
                ratio = row["spellings"]["cold"]
            warm_ms = "" if warm is None else f"{warm['p50_ms']:g}"
            warm_requests = "" if warm is None else f"{warm['requests']:g}"
            out.append(
                f"| {title} | {name} | {cold['p50_ms']:g} ({cold['max_ms']:g}) | {cold['requests']:g} / {cold['mb']:g} "
                f"| {warm_ms} | {warm_requests} | {_ratio(ratio)} |"
            )
    return out


def _cached(rows: list[dict]) -> list[str]:
    row = next((r for r in rows if "throughput_ratio" in r), None)
    if row is None:
        return []
    header = "| server | tiles/s | p50 ms | p99 ms | non-2xx | CPU ms/req | peak RSS MB | tool |"
    out = [f"### {row['scenario']}", "", header, "|---|---|---|---|---|---|---|---|"]
    for name, r in row["servers"].items():
        out.append(
            f"| {name} | {r['per_s']:g} | {r['p50_ms']:g} | {r['p99_ms']:g} | {r['non_2xx']} "
            f"| {r['cpu_ms_per_request']:g} | {r['peak_rss_mb']:g} | {r['tool']} |"
        )
    out += ["", f"eotiler / TiTiler throughput: **{row['throughput_ratio']['titiler']:g}x**.", ""]
    return out


def _evalscripts(rows: list[dict]) -> list[str]:
    row = next((r for r in rows if "evalscripts" in r), None)
    if row is None:
        return []
    header = (
        "| script | numpy eval ms | JS eval ms (runtime) | JS / numpy | JS in V8 eval ms | V8 / numpy "
        "| numpy share of tile | JS share of tile |"
    )
    out = [f"### {row['scenario']}", "", header, "|---|---|---|---|---|---|---|---|"]
    for name, r in row["evalscripts"]["scripts"].items():
        js, v8 = r["javascript"], r.get("javascript_v8", {})
        out.append(
            f"| {name} | {r['numpy']['eval_ms']:g} | {js['eval_ms']:g} ({js.get('runtime', 'v8')}) "
            f"| {r['js_vs_numpy']:g} | {v8.get('eval_ms', '-')} | {r.get('js_v8_vs_numpy', '-')} "
            f"| {r['numpy']['eval_share']:.0%} | {js['eval_share']:.0%} |"
        )
    return [*out, ""]


# Issue 15's targets per map-session step: eotiler / TiTiler seconds, and seconds at most.
SESSION_TARGETS = {"a": (0.5, None), "b": (0.2, 1.5), "c": (0.2, 1.5), "d": (0.1, None), "e": (0.2, 1.5)}


def _session_target(step: str, result: dict, ratio: float | None) -> tuple[str, str]:
    """The step's target as text and whether it is met (``-`` without one)."""
    if step not in SESSION_TARGETS:
        return "", ""
    goal, seconds = SESSION_TARGETS[step]
    text = f"<= {goal:g} x" + (f", <= {seconds:g} s" if seconds else "")
    ok = ratio is not None and ratio <= goal and (seconds is None or result["seconds"] <= seconds)
    return text, _met(ok)


def map_session_lines(rows: list[dict]) -> list[str]:
    """The map-session section: one line per step and server, then the quota targets."""
    row = next((r for r in rows if "map_session" in r), None)
    if row is None:
        return []
    session = row["map_session"]
    limits = session["limits"]
    out = [
        "## Map session over S3 with CDSE's quota",
        "",
        f"{session['size']} px JPEG2000 bands without TLM (B02-B04 at 10/20/60 m, SAFE layout, one STAC item) "
        f"behind `benchmarks/quota_proxy.py`: {limits['rtt_ms']:g} ms round trip, {limits['connections']} "
        f"connections and {limits['requests_per_minute']:,} requests a minute per credential (429 beyond), "
        f"{limits['mb_per_s']:g} MB/s per connection. A {session['view'][0]}x{session['view'][1]} view's 256 px "
        f"tiles fetched by {session['clients']} clients; {session['workers']} worker(s) per server; TiTiler through "
        "its STAC endpoint on the same hrefs. The restart is a new process: eotiler keeps its on-disk overview "
        "cache and JPEG2000 tile-part index. Peak connections: S3 requests in flight at once for the credential, "
        "refused ones included. Blank: images without data (outside the granule). Failed: answers that were not "
        "an image (incomplete eotiler images in brackets). "
        "How it is measured: `benchmarks/map_session.py`.",
        "",
        "| step | server | images (blank) | s until last | S3 requests | MB | peak connections | 429s | failed "
        "| eotiler / TiTiler s | target | met |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for step in session["steps"]:
        for name, r in step["servers"].items():
            ours = name == "eotiler"
            target, met = _session_target(step["step"], r, step["ratio"]) if ours else ("", "")
            ratio = f"**{step['ratio']:g}**" if ours and step["ratio"] is not None else ""
            title = f"({step['step']}) {step['title']}" if ours else ""
            out.append(
                f"| {title} | {name} | {r['images']} ({r.get('blank', 0)}) | {r['seconds']:g} | {r['requests']} "
                f"| {r['mb']:g} "
                f"| {r['peak_connections']} | {r['http_429']} | {r['failed']} ({r['incomplete']}) | {ratio} "
                f"| {target} | {met} |"
            )
    eotiler = [step["servers"]["eotiler"] for step in session["steps"]]
    peak = max(r["peak_connections"] for r in eotiler)
    failed = sum(r["failed"] for r in eotiler)
    out += [
        "",
        f"eotiler over the whole session: peak {peak} concurrent S3 connections (target <= {limits['connections']}: "
        f"{_met(peak <= limits['connections'])}), {sum(r['http_429'] for r in eotiler)} answers 429 at the proxy, "
        f"{failed} failed client requests (target 0: {_met(failed == 0)}).",
        "",
    ]
    return out


def _met(ok: bool) -> str:
    return "yes" if ok else "no"


def _targets(rows: list[dict]) -> list[str]:
    out = ["| target | measured | met |", "|---|---|---|"]
    by_name = {row["scenario"]: row for row in rows}
    for scenario, peer, goal in TARGETS:
        row = by_name.get(scenario)
        if row and peer in row.get("ratios", {}):
            value = row["ratios"][peer]["p50"]
            out.append(f"| {scenario}: <= {goal} x {peer} | {value:g} x | {_met(value <= goal)} |")
    cog = next((r for r in rows if r["scenario"].endswith("cog, z14")), None)
    if cog:
        value = cog["servers"]["eotiler"]["cold"]["p50_ms"]
        out.append(
            f"| cold COG tile over S3 p50 <= 150 ms at 30 ms RTT | {value:g} ms | {'yes' if value <= 150 else 'no'} |"
        )
    jp2 = next((r for r in rows if r["scenario"].endswith("jp2, z14")), None)
    if jp2:
        value = jp2["ratios"]["titiler"]["p50"]
        out.append(
            f"| cold JPEG2000 tile <= 0.5 x TiTiler (z14, no TLM) | {value:g} x | {'yes' if value <= 0.5 else 'no'} |"
        )
    overview = next((r for r in rows if "overview cache" in r["scenario"]), None)
    if overview:
        value = overview["ratios"]["titiler"]["p50"]
        out.append(
            f"| zoomed-out JPEG2000, overview cache warm <= 0.1 x TiTiler | {value:g} x | {_met(value <= 0.1)} |"
        )
    spellings = next((r for r in rows if "spellings" in r), None)
    if spellings:
        cold, warm = spellings["spellings"]["cold"]["p50"], spellings["spellings"]["warm"]["p50"]
        out.append(
            f"| AWS_* credentials cost what EOTILER_S3_* cost (cold / warm COG tile, AWS_* / EOTILER_S3_*) "
            f"| {cold:g} x / {warm:g} x | {_met(max(cold, warm) <= 1.1)} |"
        )
    cached = next((r for r in rows if "throughput_ratio" in r), None)
    if cached:
        value = cached["servers"]["eotiler"]["per_s"]
        out.append(
            f"| cached tiles >= 1,000 tiles/s on 2 workers | {value:,.0f} /s | {'yes' if value >= 1000 else 'no'} |"
        )
    return out


def _furthest_behind(rows: list[dict]) -> str:
    worst = None
    for row in rows:
        for peer, ratio in row.get("ratios", {}).items():
            if worst is None or ratio["p50"] > worst[2]:
                worst = (row["scenario"], peer, ratio["p50"])
    if worst is None:
        return ""
    return f"Furthest behind its peer: **{worst[0]}**, {worst[2]:g} x {worst[1]} (p50 latency)."


def encoder_lines(rows: list[dict]) -> list[str]:
    """The encoder section: every candidate per image, PNG bytes against MapServer's, Server-Timing."""
    row = next((r for r in rows if "encoders" in r), None)
    if row is None:
        return []
    result = row["encoders"]
    out = [
        "## Encoders on rendered images",
        "",
        "Images rendered by eotiler from the benchmark COGs and decoded back (its PNG is lossless). ms: CPU time "
        f"of the encoding thread, median of {result['repeats']} runs (min-max). vs MapServer: bytes / MapServer's "
        "AGG/PNG of the same request (its pixels differ: resampling, overviews); same pixels: the encoder run on "
        "MapServer's own pixels / MapServer's bytes (the size rule: <= 1.2). Lossless: decodes to the same pixels "
        "and alpha. JPEG/WebP: PSNR against the source pixels (max difference from GDAL's pixels). GIL free: how "
        "far a Python thread progresses during the encodes, relative to an idle main thread (1: released "
        "throughout). How it is measured: `benchmarks/encoders.py`.",
        "",
        "| image | format | encoder | settings | CPU ms (band) | bytes | vs MapServer | same pixels "
        "| lossless / PSNR dB (max diff) | GIL free |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        versus = "" if r.get("vs_mapserver") is None else f"{r['vs_mapserver']:g} x"
        same = "" if r.get("vs_mapserver_same_pixels") is None else f"{r['vs_mapserver_same_pixels']:g} x"
        quality = (
            ("yes" if r["lossless"] else "**no**")
            if r["format"] == "PNG"
            else f"{r['psnr_db']:g} ({r['max_diff_vs_gdal']})"
        )
        out.append(
            f"| {r['image']} | {r['format']} | {r['library']} | {r['settings']} "
            f"| {r['cpu_ms']:g} ({_band(r['cpu_ms_band'])}) | {r['bytes']:,} | {versus} | {same} | {quality} "
            f"| {r['gil_free']:g} |"
        )
    out += ["", "Server-Timing of the same requests on the running server (median ms per stage):", ""]
    out += ["| image | stages |", "|---|---|"]
    for image, stages in result["server_timing"].items():
        out.append(f"| {image} | {', '.join(f'{k} {v:g}' for k, v in stages.items())} |")
    return [*out, ""]


def write_markdown(report: dict, target: Path) -> None:
    """The human-readable report: machine, versions, every scenario, ratios and targets."""
    machine = report["machine"]
    lines = [
        "# Benchmarks: eotiler, TiTiler and MapServer on the same machine, data and requests",
        "",
        f"Generated {report['generated']} by `make bench` ({report['mode']} run, {report['seconds']} s). Raw numbers: "
        "`benchmarks/results/bench.json`; how each number is measured: `benchmarks/bench.py`.",
        "",
        "| machine | |",
        "|---|---|",
        *[f"| {key} | {value} |" for key, value in machine.items()],
        f"| plan | {report['plan']} |",
        "",
        "Ratios are eotiler / peer of the p50 latency (below 1: eotiler is faster); the band is the",
        "min-max of the per-repeat ratios. Data are derived from the real T29UNU sample bands (see",
        "`benchmarks/bench.py`). MapServer cannot compute NDVI (no raster band math), so it is measured",
        "on true colour GetMaps and on WCS; TiTiler has no WMS, so its GetMap rows use `/cog/bbox`.",
        "",
        "## Targets",
        "",
        *_targets(report["rows"]),
        "",
        _furthest_behind(report["rows"]),
        "",
        "## Local COG: tiles, GetMap, GetCoverage",
        "",
        *_request_rows(report["rows"]),
        "",
        "## Over S3 (30 ms round-trip time at the S3 server)",
        "",
        *_s3_rows(report["rows"]),
        "",
        *map_session_lines(report["rows"]),
        *_cached(report["rows"]),
        *_evalscripts(report["rows"]),
        *encoder_lines(report["rows"]),
    ]
    target.write_text("\n".join(lines) + "\n")
