"""The dataset fingerprint: a short hash of everything a trial reads, part of every trial's identity.

Covered, per session (in order; the folder's name is not, so a copy under another name keeps its trials):
the transforms files and the allowlist; every FLAME parameter file, ``points3d.ply`` and
``canonical_flame_param.npz`` by content (they
are small, and re-tracking FLAME changes a trial's input without changing any transforms file); every
image and mask by path and size (reading gigabytes of images on every config hash would cost more than
it protects; a re-exported image almost always changes size). Content hashes are cached per process by
(path, size, mtime), so hashing the same configs again costs a ``stat`` per file.
The synthetic head is fingerprinted by its generator's parameters (no data needs to exist).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from reflect.data.errors import DatasetError
from reflect.data.layout import SPLITS, resolve_sessions

_CONTENT_CACHE: dict[tuple[str, int, int], str] = {}
# read by the reader from a session's root when present: the initial points and the canonical FLAME parameters
ROOT_FILES = ("points3d.ply", "canonical_flame_param.npz")


def _size(path: Path) -> str:
    """The file's size, or "missing": the reader skips frames outside an allowlist and splits it does not
    load, so a file it will never open must not make the fingerprint fail (a file it does open and cannot
    read is its error to report, with the frame)."""
    try:
        return str(path.stat().st_size)
    except OSError:
        return "missing"


def _content_hash(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "missing"
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _CONTENT_CACHE:
        try:
            _CONTENT_CACHE[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as exc:
            raise DatasetError(f"{path}: cannot read ({exc.strerror})") from None
    return _CONTENT_CACHE[key]


def _frame_files(frame: dict) -> tuple[list[str], list[str]]:
    """(files hashed by content, files hashed by size) one transforms frame refers to (as the reader resolves them)."""
    by_content = [frame["flame_param_path"]] if isinstance(frame.get("flame_param_path"), str) else []
    by_size = []
    image = frame.get("file_path")
    if isinstance(image, str) and image:
        by_size.append(image if Path(image).suffix else image + ".png")  # GaussianAvatars' default extension
    if isinstance(frame.get("fg_mask_path"), str):
        by_size.append(frame["fg_mask_path"])
    regions = frame.get("region_mask_paths")
    if isinstance(regions, dict):
        by_size += [str(regions[name]) for name in sorted(regions)]
    return by_content, by_size


def dataset_fingerprint(cfg: Any) -> str:
    """Short hash (12 hex digits) of the data a ``DataConfig`` selects; see the module docstring for what it covers.

    Args:
        cfg: a ``DataConfig`` (``root`` or ``sessions``, or neither for the synthetic head).
    Returns:
        The fingerprint. A transforms file that cannot be read raises DatasetError naming it; a file a frame
        refers to that is absent counts as "missing" (the reader reports it if it loads that frame).
    """
    return _fingerprint(cfg, None)


def evaluation_fingerprint(cfg: Any) -> str:
    """Short hash of the data a trial is *scored* on: the sessions ``data.eval_sessions`` names (all by default).

    Two trials whose training data differ (a data decision: more sessions, other sampling) still compare when
    this matches: it equals ``dataset_fingerprint`` of a config holding only the evaluated sessions.
    """
    return _fingerprint(cfg, getattr(cfg, "eval_sessions", None))


def _fingerprint(cfg: Any, only: Optional[Sequence[str]]) -> str:
    h = hashlib.sha256()
    if cfg.root is None and not cfg.sessions:
        from dataclasses import replace

        from reflect.data.synthetic import _as_config, config_key, session_name, synthetic_fingerprint

        synthetic = _as_config(cfg.synthetic)
        text = synthetic_fingerprint(synthetic)
        kept = [i for i in range(synthetic.sessions) if only is None or session_name(i) in set(only)]
        if kept == [0]:  # session 1 alone: the same data as a one-session config
            text = synthetic_fingerprint(replace(synthetic, sessions=1))
        elif len(kept) < synthetic.sessions:
            text = "+".join(config_key(synthetic, i) for i in kept) + (":allowlist" if synthetic.allowlist else "")
        h.update(f"synthetic:{text}".encode())
        return h.hexdigest()[:12]
    sessions = resolve_sessions(cfg)
    if only is not None:
        sessions = [s for s in sessions if s.name in set(only)]
    for index, s in enumerate(sessions):
        h.update(f"session {index}\n".encode())
        for split in SPLITS:
            path = s.root / f"transforms_{split}.json"
            try:
                raw = path.read_bytes()
            except OSError as exc:
                raise DatasetError(f"{path}: cannot read ({exc.strerror}); expected a transforms file") from None
            h.update(raw)
            try:
                frames = json.loads(raw).get("frames", [])
            except (ValueError, AttributeError):
                frames = []  # the reader reports the malformed file; the bytes above already identify it
            for frame in frames if isinstance(frames, list) else []:
                if not isinstance(frame, dict):
                    continue
                by_content, by_size = _frame_files(frame)
                for rel in by_content:
                    h.update(f"{rel}:{_content_hash(s.root / rel)}\n".encode())
                for rel in by_size:
                    h.update(f"{rel}:{_size(s.root / rel)}\n".encode())
        for name in ROOT_FILES:
            if (s.root / name).is_file():
                h.update(f"{name}:{_content_hash(s.root / name)}\n".encode())
        if s.allowlist is not None:
            h.update(json.dumps(sorted(s.allowlist)).encode())
    return h.hexdigest()[:12]
