"""Minimal PLY point I/O (x, y, z of the vertex element), ascii or binary.

Enough for ``points3d.ply`` (GaussianAvatars/3DGS write x,y,z,nx,ny,nz,red,green,blue
with plyfile); no dependency on plyfile.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from reflect.data.errors import DatasetError

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _parse_header(path: Path, raw: bytes) -> tuple[str, list[tuple[str, int, list[tuple[str, str]]]], int]:
    """(format, [(element, count, [(property, numpy type)])], offset of the body)."""
    end = raw.find(b"end_header")
    if not raw.startswith(b"ply") or end < 0:
        raise DatasetError(f"{path}: not a PLY file (expected a 'ply' ... 'end_header' header)")
    body = raw.index(b"\n", end) + 1
    fmt = ""
    elements: list[tuple[str, int, list[tuple[str, str]]]] = []
    for line in raw[:end].decode("ascii", errors="replace").splitlines()[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format" and len(words) >= 2:
            fmt = words[1]
        elif words[0] == "element" and len(words) == 3 and words[2].isdigit():
            elements.append((words[1], int(words[2]), []))
        elif words[0] == "property" and elements and len(words) == 3 and words[1] in _PLY_TYPES:
            elements[-1][2].append((words[2], _PLY_TYPES[words[1]]))
        elif words[0] == "property" and elements and words[1] == "list":
            elements[-1][2].append((words[-1], "list"))
        else:
            raise DatasetError(f"{path}: unsupported PLY header line {line!r}")
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise DatasetError(f"{path}: unsupported PLY format {fmt!r} (expected ascii or binary)")
    return fmt, elements, body


def read_ply_points(path: Path) -> np.ndarray:
    """float32 [P,3] positions of the PLY's vertex element."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read ({exc.strerror})") from None
    fmt, elements, offset = _parse_header(path, raw)
    for name, count, props in elements:
        names = [p for p, _ in props]
        if name != "vertex":
            if any(t == "list" for _, t in props):
                raise DatasetError(f"{path}: a list-valued '{name}' element before 'vertex' is not supported")
            offset += count * sum(np.dtype(t).itemsize for _, t in props) if fmt != "ascii" else 0
            continue
        if not {"x", "y", "z"} <= set(names) or any(t == "list" for _, t in props):
            raise DatasetError(f"{path}: expected a vertex element with scalar x, y, z properties, got {names}")
        try:
            if fmt == "ascii":
                lines = raw[offset:].decode("ascii").splitlines()
                skip = sum(c for n, c, _ in elements[: elements.index((name, count, props))])
                table = np.loadtxt(lines[skip : skip + count], dtype=np.float64, ndmin=2)
                cols = [names.index(a) for a in "xyz"]
                pts = table[:, cols]
            else:
                order = "<" if fmt == "binary_little_endian" else ">"
                dtype = np.dtype([(p, order + t) for p, t in props])
                table = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
                pts = np.stack([table["x"], table["y"], table["z"]], axis=1)
        except ValueError as exc:
            raise DatasetError(f"{path}: truncated or malformed vertex data (expected {count} vertices: {exc})") from None
        if pts.shape != (count, 3) or not np.isfinite(pts).all():
            raise DatasetError(f"{path}: expected {count} finite x, y, z rows, got shape {pts.shape}")
        return pts.astype(np.float32)
    raise DatasetError(f"{path}: no 'vertex' element")


def write_ply_points(path: Path, points: np.ndarray) -> None:
    """Binary little-endian PLY with float x, y, z (what :func:`read_ply_points` reads back)."""
    pts = np.ascontiguousarray(points, dtype="<f4")
    header = f"ply\nformat binary_little_endian 1.0\nelement vertex {len(pts)}\n" \
             "property float x\nproperty float y\nproperty float z\nend_header\n"
    Path(path).write_bytes(header.encode("ascii") + pts.tobytes())
