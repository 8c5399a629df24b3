"""Tile-part index of a JPEG2000 file, handed to OpenJPEG as a synthesized TLM marker.

Why: the Sentinel-2 JPEG2000 files ESA ships carry no TLM (tile-part length) marker, so OpenJPEG
finds tile-part ``k`` by reading the SOT header of every tile-part before it, one HTTP range
request per hop (tens of requests for one tile of a 10980 px band). Walking that chain once gives
the offset and length of every tile-part; a TLM marker built from it and inserted after the main
header lets OpenJPEG (2.5.3 and later) jump straight to the tile-parts a window needs. The rest
of the file is untouched, so pixels are bit-identical.

The result is a *virtual object*: ``prefix`` (the original boxes and main header, the ``jp2c``
box length grown by the marker's size, then the TLM marker) followed by the original bytes from
the first tile-part on. ``TilePartIndex.pieces`` maps a byte range of the virtual object onto the
prefix and the original object. An index is a few KB and is keyed on the object's ETag; it also
keeps the object's ``Last-Modified``, which the virtual object carries, so that GDAL's idea of
the file's version (size and modification time) changes when the object does.

A file that carries TLM markers already (not what ESA ships, but what GDAL writes with
``TLM=YES``) needs no walk: its index lists the tile-parts from those markers and its prefix is
the original header unchanged, so the object is served as it is, only a whole tile-part at a time
(GDAL reads a tile-part in growing chunks, 32 KB then 393 KB then more, a round trip each).

How far each read of the walk reaches is the caller's choice (``window``): a hop reads the next
SOT header only, which costs one round trip per tile-part; when moving a tile-part's bytes costs
less than a round trip, one read spanning several tile-parts walks them all, and the tile-parts
it holds whole are handed to ``keep`` (the walk then fetched them already).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from server.sources.jp2_walk import SOT, NotIndexable, Reader, WalkPolicy, walk_chain

__all__ = ["NotIndexable", "TilePartIndex", "WalkPolicy", "build_index", "tlm_segments"]

TLM = 0xFF55
SOC = 0xFF4F
SIZ = 0xFF51
_NO_INDEX_MARKERS = {0xFF57, 0xFF60}  # PLM/PPM: packet headers in the main header, left alone
_MAGIC = b"EOJ2IDX2"  # 2: with Last-Modified; an index of another version is built again


@dataclass(frozen=True, slots=True)
class TilePartIndex:
    """A JPEG2000 object seen with a synthesized TLM marker."""

    etag: str
    size: int  # bytes of the original object
    body_offset: int  # where the first tile-part starts in the original object
    prefix: bytes  # original bytes before ``body_offset``, with the box length grown, then TLM
    last_modified: str = ""  # the store's Last-Modified header for this ETag ('' when it gave none)

    @property
    def virtual_size(self) -> int:
        """Bytes of the object as served with the marker."""
        return len(self.prefix) + self.size - self.body_offset

    def pieces(self, start: int, end: int) -> Iterator[tuple[bool, int, int]]:
        """``(from_prefix, first, last)`` pieces covering virtual bytes ``start..end`` (inclusive).

        ``first``/``last`` index the prefix when ``from_prefix``, else the original object.
        """
        end = min(end, self.virtual_size - 1)
        if start <= end and start < len(self.prefix):
            yield True, start, min(end, len(self.prefix) - 1)
        shift = self.body_offset - len(self.prefix)
        first = max(start, len(self.prefix))
        if first <= end:
            yield False, first + shift, end + shift

    def tile_parts(self) -> list[tuple[int, int]]:
        """``(offset, length)`` of every tile-part in the original object, read back from the TLM
        marker segments of the prefix (the file's own, or the synthesized ones after its header)."""
        return [(offset, length) for _, offset, length in self._entries()]

    def tile_parts_under(self, window: tuple[int, int, int, int]) -> list[tuple[int, int]]:
        """``(offset, length)`` of the tile-parts of the code-stream tiles that hold pixels of
        ``window`` (``col0, row0, col1, row1`` of the full-resolution image, ends excluded), in
        file order; empty when the header gives no tile grid."""
        grid = _tile_grid(self.prefix, self._start())
        if grid is None:
            return []
        width, height, x_off, y_off, tile_w, tile_h, tile_x, tile_y = grid
        col0, row0, col1, row1 = (max(0, v) for v in window)
        col1, row1 = min(col1, width - x_off), min(row1, height - y_off)
        if col0 >= col1 or row0 >= row1:
            return []
        across = -(-(width - tile_x) // tile_w)
        first_col, last_col = (x_off + col0 - tile_x) // tile_w, (x_off + col1 - 1 - tile_x) // tile_w
        first_row, last_row = (y_off + row0 - tile_y) // tile_h, (y_off + row1 - 1 - tile_y) // tile_h
        tiles = {r * across + c for r in range(first_row, last_row + 1) for c in range(first_col, last_col + 1)}
        return [(offset, length) for tile, offset, length in self._entries() if tile in tiles]

    def _start(self) -> int:
        """Where the codestream starts in the prefix."""
        return _codestream(Reader(lambda o, n: self.prefix[o : o + n], len(self.prefix)), len(self.prefix))[1]

    def _entries(self) -> list[tuple[int, int, int]]:
        """``(tile, offset, length)`` of every tile-part, from the TLM marker segments."""
        entries: list[tuple[int, int, int]] = []
        offset = self.body_offset
        for tile, size in tlm_entries(self.prefix, self._start() + 2):
            entries.append((tile, offset, size))
            offset += size
        return entries

    def to_bytes(self) -> bytes:
        """A compact serialisation for the disk and Redis stores."""
        etag, modified = self.etag.encode(), self.last_modified.encode()
        head = struct.pack(">QQHH", self.size, self.body_offset, len(etag), len(modified))
        return _MAGIC + head + etag + modified + self.prefix

    @classmethod
    def from_bytes(cls, data: bytes) -> TilePartIndex:
        """The inverse of ``to_bytes``; ``ValueError`` for anything else."""
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 20:
            raise ValueError("not a tile-part index of this version")
        size, body_offset, etag_len, modified_len = struct.unpack_from(">QQHH", data, len(_MAGIC))
        etag_at = len(_MAGIC) + 20
        modified_at = etag_at + etag_len
        prefix_at = modified_at + modified_len
        etag, modified = data[etag_at:modified_at].decode(), data[modified_at:prefix_at].decode()
        return cls(etag, size, body_offset, data[prefix_at:], modified)


def _codestream(reader: Reader, size: int) -> tuple[int, int, int]:
    """``(box_offset, codestream_start, codestream_end)`` of the ``jp2c`` box (-1: a bare codestream)."""
    if reader.get(0, 2) == b"\xff\x4f":
        return -1, 0, size
    offset = 0
    while offset + 8 <= size:
        length, kind = struct.unpack(">I4s", reader.get(offset, 8))
        header = 8
        if length == 1:
            (length,) = struct.unpack(">Q", reader.get(offset + 8, 8))
            header = 16
        elif length == 0:
            length = size - offset
        if length < header:
            raise NotIndexable("malformed box")
        if kind == b"jp2c":
            return offset, offset + header, offset + length
        offset += length
    raise NotIndexable("no codestream box")


def tlm_lengths(header: bytes, at: int) -> list[int]:
    """Tile-part lengths listed by the TLM marker segments of the main header starting at ``at``
    (just after SOC), in their ``Ztlm`` order; any Ttlm and Ptlm size (ISO 15444-1 A.7.1)."""
    return [size for _, size in tlm_entries(header, at)]


def tlm_entries(header: bytes, at: int) -> list[tuple[int, int]]:
    """``(tile, length)`` of each tile-part the TLM marker segments list, in ``Ztlm`` order.

    Without Ttlm (ST=0) the standard has one tile-part per tile, in tile order.
    """
    segments: list[tuple[int, list[tuple[int | None, int]]]] = []
    while 0 <= at and at + 4 <= len(header):
        marker, length = struct.unpack_from(">HH", header, at)
        if marker >> 8 != 0xFF or length < 2 or marker == SOT:
            break
        if marker == TLM and length >= 4 and at + 2 + length <= len(header):
            number, stlm = header[at + 4], header[at + 5]
            tile_bytes, part_bytes = (stlm >> 4) & 3, 4 if stlm >> 6 & 1 else 2
            if tile_bytes == 3:
                raise NotIndexable("malformed TLM marker")
            step = tile_bytes + part_bytes
            size_fmt = ">I" if part_bytes == 4 else ">H"
            tile_fmt = {1: ">B", 2: ">H"}.get(tile_bytes)
            starts = range(at + 6, at + 2 + length - step + 1, step)
            segments.append((number, [
                (struct.unpack_from(tile_fmt, header, p)[0] if tile_fmt else None,
                 struct.unpack_from(size_fmt, header, p + tile_bytes)[0])
                for p in starts
            ]))  # fmt: skip
        at += 2 + length
    entries = [entry for _, listed in sorted(segments, key=lambda s: s[0]) for entry in listed]
    return [(i if tile is None else tile, size) for i, (tile, size) in enumerate(entries)]


def _tile_grid(header: bytes, start: int) -> tuple[int, int, int, int, int, int, int, int] | None:
    """SIZ's ``Xsiz, Ysiz, XOsiz, YOsiz, XTsiz, YTsiz, XTOsiz, YTOsiz`` from the main header
    starting at ``start`` (the SOC marker); ``None`` when it is not there."""
    at = start + 2
    while at + 4 <= len(header):
        marker, length = struct.unpack_from(">HH", header, at)
        if marker == SIZ and length >= 38 and at + 38 <= len(header):
            grid = struct.unpack_from(">8I", header, at + 6)
            return grid if grid[4] and grid[5] else None  # type: ignore[return-value]
        if marker >> 8 != 0xFF or length < 2 or marker == SOT:
            return None
        at += 2 + length
    return None


def _main_header_end(reader: Reader, start: int) -> tuple[int, int]:
    """Offset of the first SOT marker and the tile count (from SIZ; 0 if absent); refuses files
    whose main header carries PLM or PPM."""
    if struct.unpack(">H", reader.get(start, 2))[0] != SOC:
        raise NotIndexable("codestream does not start with SOC")
    offset = start + 2
    tiles = 0
    while True:
        marker, length = struct.unpack(">HH", reader.get(offset, 4))
        if marker == SOT:
            return offset, tiles
        if marker == SIZ and length >= 38:
            width, height, _, _, tile_w, tile_h, tile_x, tile_y = struct.unpack(">8I", reader.get(offset + 6, 32))
            if tile_w and tile_h:
                tiles = -(-(width - tile_x) // tile_w) * -(-(height - tile_y) // tile_h)
        if marker in _NO_INDEX_MARKERS:
            raise NotIndexable(f"main header already has marker {marker:04X}")
        if marker >> 8 != 0xFF or length < 2:
            raise NotIndexable("malformed main header")
        offset += 2 + length


def tlm_segments(parts: list[tuple[int, int]]) -> bytes:
    """TLM marker segments (ISO 15444-1 A.7.1) listing ``parts`` in order: 32-bit lengths."""
    wide = max(tile for tile, _ in parts) > 255
    entry = ">HI" if wide else ">BI"
    per_entry = struct.calcsize(entry)
    per_segment = (65535 - 4) // per_entry
    chunks = [parts[i : i + per_segment] for i in range(0, len(parts), per_segment)]
    if len(chunks) > 256:
        raise NotIndexable("too many tile-parts for TLM")
    stlm = (2 if wide else 1) << 4 | 1 << 6  # ST: Ttlm size; SP=1: 32-bit Ptlm
    out = bytearray()
    for number, chunk in enumerate(chunks):
        out += struct.pack(">HHBB", TLM, 4 + per_entry * len(chunk), number, stlm)
        for tile, length in chunk:
            out += struct.pack(entry, tile, length)
    return bytes(out)


def build_index(
    read: Callable[[int, int], bytes],
    size: int,
    etag: str,
    last_modified: str = "",
    walk: WalkPolicy | None = None,
) -> tuple[TilePartIndex, int]:
    """Walk the object once and build its index; returns it with the number of range reads made.

    ``read(offset, length)`` fetches bytes of the original object. Raises ``NotIndexable`` when
    the object already has TLM (OpenJPEG uses it as it is) or is not a JPEG2000 file.
    """
    reader = Reader(read, size)
    box_offset, start, end = _codestream(reader, size)
    first, tiles = _main_header_end(reader, start)
    head = bytearray(reader.get(0, first))
    native = tlm_lengths(bytes(head), start + 2)
    if native:  # the file's own TLM: served as it is, the index only lists its tile-parts
        if all(n >= 14 for n in native) and end - 2 <= first + sum(native) <= end:
            return TilePartIndex(etag, size, first, bytes(head), last_modified), reader.requests
        # a TLM that does not account for the codestream is not trusted: the object is served as it is
        raise NotIndexable("TLM marker does not fit the codestream")
    parts, requests = walk_chain(read, size, first, end, tiles, walk or WalkPolicy())
    marker = tlm_segments(parts)
    if box_offset >= 0:
        length = struct.unpack_from(">I", head, box_offset)[0]
        if length == 1:
            (wide,) = struct.unpack_from(">Q", head, box_offset + 8)
            struct.pack_into(">Q", head, box_offset + 8, wide + len(marker))
        elif length != 0:  # 0: the box runs to the end of the file, whatever its size
            struct.pack_into(">I", head, box_offset, length + len(marker))
    return TilePartIndex(etag, size, first, bytes(head) + marker, last_modified), reader.requests + requests
