"""A writer log's write-ahead log: checksummed frames of canonical event lines, fsynced per batch.

Frame layout (little endian)::

    magic b"CSW2" | first_seq u64 | count u32 | payload_len u32 | crc32 u32 | payload | padding

``crc32`` covers the three numbers and the payload. The payload is the batch's canonical event
bytes joined by newlines (canonical JSON never contains a raw newline). Zero padding ends each
frame at a multiple of 4096 bytes from the file's start, so frames can be written with O_DIRECT:
straight from our buffer to the disk, without taking fresh page-cache pages (which cost more than
the disk write on virtual machines whose memory the host backs lazily). ``CSW1`` frames (written
before padding) have no padding and are still read. A frame that is short or fails its checksum is
a torn write: it was never acknowledged, so it and everything after it is dropped on recovery.
"""

from __future__ import annotations

import errno
import mmap
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .durable import fsync_dir

__all__ = ["WalFrame", "WalScan", "WriteAheadLog", "scan_wal"]

try:  # ISA-L's CRC-32 is zlib's, about fourteen times faster here (PCLMUL)
    from isal.isal_zlib import crc32 as _isal_crc32

    _crc32: Callable[..., int] = _isal_crc32
except ImportError:  # pragma: no cover - isal has wheels for the platforms we build for
    _crc32 = zlib.crc32

_MAGIC = b"CSW2"
_UNPADDED_MAGIC = b"CSW1"
_HEADER = struct.Struct("<4sQIII")
_BLOCK = 4096


@dataclass(frozen=True)
class WalFrame:
    """One acknowledged batch: its first seq, and the canonical bytes of each event."""

    first_seq: int
    lines: tuple[bytes, ...]
    offset: int

    @property
    def last_seq(self) -> int:
        """The seq of the frame's last event."""
        return self.first_seq + len(self.lines) - 1


@dataclass(frozen=True)
class WalScan:
    """What a WAL file holds: its intact frames and where the intact part ends."""

    frames: tuple[WalFrame, ...]
    valid_length: int
    file_length: int
    damage: str = ""
    intact_after_damage: bool = False  # damage with intact frames after it: not a torn write

    @property
    def torn(self) -> bool:
        """Whether bytes after the last intact frame exist (a torn or damaged tail)."""
        return self.valid_length < self.file_length


def scan_wal(path: Path) -> WalScan:
    """Read every intact frame of a WAL file, stopping at the first short or damaged one."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return WalScan((), 0, 0)
    frames = []
    offset = 0
    damage = ""
    for frame, end, problem in _frames(data):
        if problem:
            damage = problem
            break
        assert frame is not None
        frames.append(frame)
        offset = end
    intact_after = bool(damage) and _intact_frame_after(data, offset)
    return WalScan(tuple(frames), offset, len(data), damage, intact_after)


def _intact_frame_after(data: bytes, damaged_at: int) -> bool:
    """Whether an intact frame follows the damage: then it is not a torn (last) write."""
    for magic in (_MAGIC, _UNPADDED_MAGIC):
        position = data.find(magic, damaged_at + 1)
        while position != -1:
            frame, _, problem = next(_frames(data, position))
            if not problem and frame is not None:
                return True
            position = data.find(magic, position + 1)
    return False


def _frames(data: bytes, offset: int = 0) -> Iterator[tuple[WalFrame | None, int, str]]:
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            yield None, offset, f"short frame header at byte {offset}"
            return
        magic, first_seq, count, length, crc = _HEADER.unpack_from(data, offset)
        start = offset + _HEADER.size
        payload = data[start : start + length]
        if magic not in (_MAGIC, _UNPADDED_MAGIC):
            yield None, offset, f"bad frame marker at byte {offset}"
            return
        if len(payload) < length:
            yield None, offset, f"frame at byte {offset} is cut short"
            return
        if _crc32(payload, _crc32(data[offset + 4 : start - 4])) != crc:
            yield None, offset, f"frame at byte {offset} fails its checksum"
            return
        lines = tuple(payload.split(b"\n")) if count else ()
        if len(lines) != count:
            yield None, offset, f"frame at byte {offset} holds {len(lines)} events, says {count}"
            return
        offset = start + length
        if magic == _MAGIC:  # a cut in the padding loses nothing: the payload is whole
            offset = min(offset + -offset % _BLOCK, len(data))
        yield WalFrame(first_seq, lines, start - _HEADER.size), offset, ""


class WriteAheadLog:
    """The append side of a writer's WAL; only the writer log's lock holder uses it."""

    def __init__(self, path: Path) -> None:
        existed = path.exists()
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        self._direct: int | None = None
        self._staging: mmap.mmap | None = None  # page-aligned, as O_DIRECT needs
        try:
            self._length = os.lseek(self._fd, 0, os.SEEK_END)
            # A second descriptor writes around the page cache, where the filesystem allows it.
            self._direct = _open_direct(path) if self._length % _BLOCK == 0 else None
            if not existed:
                fsync_dir(path.parent)
        except BaseException:
            self.close()
            raise

    @property
    def length(self) -> int:
        """Bytes in the WAL."""
        return self._length

    def append(self, first_seq: int, count: int, payload: bytes | memoryview) -> None:
        """Write one frame of ``count`` newline-joined events; durable before returning."""
        if self._fd < 0:
            raise ValueError(f"{self.path} is closed")
        numbers = struct.pack("<QII", first_seq, count, len(payload))
        crc = _crc32(payload, _crc32(numbers))
        header = _MAGIC + numbers + struct.pack("<I", crc)
        end = self._length + len(header) + len(payload)
        padding = -end % _BLOCK
        try:
            written = self._write(header, payload, padding)
            if written != len(header) + len(payload) + padding:
                raise OSError(f"short write to {self.path}")
            os.fdatasync(self._fd)
        except BaseException:
            self.truncate(self._length)  # drop the unacknowledged partial frame
            raise
        self._length += written

    def _write(self, header: bytes, payload: bytes | memoryview, padding: int) -> int:
        size = len(header) + len(payload) + padding
        if self._direct is not None:
            if self._staging is None or len(self._staging) < size:
                if self._staging is not None:
                    self._staging.close()
                self._staging = mmap.mmap(-1, size + -size % (1 << 20))
            staging = self._staging
            staging[: len(header)] = header
            staging[len(header) : len(header) + len(payload)] = payload
            staging[len(header) + len(payload) : size] = bytes(padding)
            try:
                with memoryview(staging) as view:
                    return os.pwrite(self._direct, view[:size], self._length)
            except OSError as err:
                if err.errno != errno.EINVAL:
                    raise
                os.close(self._direct)  # the filesystem refused a direct write after all
                self._direct = None
        return os.pwritev(self._fd, [header, payload, bytes(padding)], self._length)

    def truncate(self, length: int = 0) -> None:
        """Cut the WAL to ``length`` bytes, durably."""
        os.ftruncate(self._fd, length)
        os.fsync(self._fd)
        self._length = length

    def close(self) -> None:
        """Release the file (appending after this raises)."""
        if self._direct is not None:
            os.close(self._direct)
            self._direct = None
        if self._staging is not None:
            self._staging.close()
            self._staging = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _open_direct(path: Path) -> int | None:
    """A write descriptor that bypasses the page cache, or None where that is unsupported."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return None
    try:
        return os.open(path, os.O_WRONLY | direct)
    except OSError:  # e.g. tmpfs
        return None
