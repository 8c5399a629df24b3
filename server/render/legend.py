"""Legend images (PNG) from a layer's legend definition, its script's colour ramp or its colormap.

Why Pillow: legends need text labels; drawing glyphs by hand is not worth owning.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from server.config.models import LegendConfig, LegendItem


def _rgba(color: str) -> tuple[int, int, int, int]:
    color = color.lstrip("#")
    alpha = int(color[6:8], 16) if len(color) == 8 else 255
    return (int(color[0:2], 16), int(color[2:4], 16), int(color[4:6], 16), alpha)


def _label(item: LegendItem) -> str:
    if item.label:
        return item.label
    return f"{item.value:g}" if item.value is not None else ""


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default()


def _items(legend: LegendConfig) -> list[LegendItem]:
    # layers are built with the script's colours filled in (``catalog.layers.with_script_legend``)
    if legend.items is None or any(item.color is None for item in legend.items):
        raise ValueError(f"legend '{legend.title}' has colours left to fill in from its script")
    return legend.items


def _discrete(legend: LegendConfig, draw: ImageDraw.ImageDraw, top: int) -> None:
    for i, item in enumerate(_items(legend)):
        y = top + i * 20
        draw.rectangle([6, y + 2, 22, y + 16], fill=_rgba(item.color), outline=(60, 60, 60, 255))
        draw.text((30, y + 3), _label(item), fill=(20, 20, 20, 255), font=_font())


def _gradient(legend: LegendConfig, image: Image.Image, draw: ImageDraw.ImageDraw, top: int, height: int) -> None:
    items = _items(legend)
    values = np.array([it.value if it.value is not None else i for i, it in enumerate(items)], dtype=float)
    colors = np.array([_rgba(it.color) for it in items], dtype=float)
    span = values[-1] - values[0] or 1.0
    bar = np.zeros((height, 20, 4), dtype=np.uint8)
    for row in range(height):
        v = values[-1] - span * row / max(height - 1, 1)  # highest value on top
        bar[row, :, :] = [np.interp(v, values, colors[:, c]) for c in range(4)]
    image.paste(Image.fromarray(bar, "RGBA"), (6, top))
    draw.rectangle([6, top, 25, top + height - 1], outline=(60, 60, 60, 255))
    for item, value in zip(items, values, strict=True):
        y = top + int((values[-1] - value) / span * (height - 1))
        draw.line([26, y, 30, y], fill=(20, 20, 20, 255))
        draw.text((34, max(top, min(y - 6, top + height - 12))), _label(item), fill=(20, 20, 20, 255), font=_font())


def render_legend(legend: LegendConfig) -> bytes:
    """Draw ``legend`` as a PNG with a transparent background behind a light panel."""
    labels = [_label(it) for it in _items(legend)]
    text_width = max([len(legend.title)] + [len(lab) for lab in labels]) * 7 + 40
    top = 22 if legend.title else 6
    body = len(labels) * 20 if legend.type == "discrete" else 160
    image = Image.new("RGBA", (max(text_width, 90), top + body + 8), (255, 255, 255, 230))
    draw = ImageDraw.Draw(image)
    if legend.title:
        draw.text((6, 5), legend.title, fill=(0, 0, 0, 255), font=_font())
    if legend.type == "discrete":
        _discrete(legend, draw, top)
    else:
        _gradient(legend, image, draw, top, body)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def colormap_legend(title: str, lut: np.ndarray, low: float, high: float) -> LegendConfig:
    """A gradient legend sampled from a 256-entry RGBA lookup table (0..1 floats)."""
    items = []
    for frac in (0.0, 0.25, 0.5, 0.75, 1.0):
        r, g, b, a = (np.rint(lut[int(frac * 255)] * 255)).astype(int)
        items.append(LegendItem(color=f"#{r:02x}{g:02x}{b:02x}{a:02x}", value=low + (high - low) * frac))
    return LegendConfig(type="gradient", title=title, items=items)


def script_legend(legend: LegendConfig, stops: list[float], colours: list[int]) -> LegendConfig:
    """``legend`` with the items of a script's colour ramp (``colour_ramp.script_ramp``)."""
    items = [LegendItem(color=f"#{c:06x}", value=v) for v, c in zip(stops, colours, strict=True)]
    return legend.model_copy(update={"items": items})
