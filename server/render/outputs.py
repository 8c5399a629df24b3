"""Several outputs of one evalscript from one read: the Process API's ``output.responses``.

Why a request type of its own: a script with outputs ``default`` and ``ndvi`` (and the
``userdata`` its ``updateOutputMetadata`` sets) needs the scenes read and mosaicked once, then
evaluated per output and encoded per format. Each output is a full ``RenderRequest`` (its
script is the script's view of that output), so each image is cached under the very key the
same image has when another protocol draws it.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.models import RenderRequest

USERDATA_MEDIA = "application/json"


@dataclass(frozen=True, slots=True)
class OutputsRequest:
    """``base`` is what is read: layer, grid, time, filters, clip and the whole evalscript (its
    inputs, and its ``updateOutputMetadata``); ``outputs`` are the images, each ``base`` with
    its output's script view and format; ``user_data`` adds the script's userData (JSON) after
    them."""

    base: RenderRequest
    outputs: tuple[RenderRequest, ...]
    user_data: bool = False
