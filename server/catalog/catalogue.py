"""What the pipeline needs from a scene catalogue, whichever kind it is (static files or a STAC API)."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from server.models import Priority, Scene, TimeRange

BBox = tuple[float, float, float, float]


class Catalogue(Protocol):
    """A searchable set of scenes of one collection."""

    enumerable: bool  # True when ``scenes`` lists every scene (static catalogues)
    scenes: list[Scene]

    def search(
        self, bbox: BBox, time_range: TimeRange | None, maxcc: float | None, priority: Priority, limit: int
    ) -> list[Scene]:
        """Scenes overlapping ``bbox`` (lon/lat) within ``time_range`` and ``maxcc``, in priority order."""
        ...

    def extent(self) -> tuple[BBox | None, list[datetime]]:
        """Lon/lat extent and the acquisition times known up front (none for an API)."""
        ...

    def ready(self) -> bool:
        """Whether searches can be answered now (``/readyz``)."""
        ...
