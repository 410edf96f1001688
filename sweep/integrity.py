"""One integrity check for every array of a store: commit records of raw chunk-file hashes.

The flag array (`finished`) names the store's *cell dims*. Every other array whose dims begin
with them is a *cell array*: W, b, loss, loss_curve, diverged, W_out, the snapshots, any
future variable, found from the zarr metadata and never by name. A writer writes a region's
cell arrays, then calls `commit` (`writing`), which for each chunk the region touches writes
the chunk's flags whole, from the cells it vouches for, and then records a hash of every chunk
file of every cell array and of the flag chunk: `<store>/.commits/<chunk index>.json`, written
beside and renamed in. A cell is intact (`intact`) when its chunk's record names it as
committed, the record covers exactly the store's cell arrays, and every chunk file, the flags'
included, hashes to the record (a missing file as "absent"). The remaining arrays
(coordinates, importance, feature_density: fixed by the config) are recorded once, when the
template is written (`record_template`, `.commits/template.json`), and checked on open
(`damaged_static`).

Why the flags are written whole from the record and hashed too: they are what every reader
of the store sees. Set in place, a damaged flag chunk was read back to be rewritten; a
truncated blosc chunk decodes without an error into whatever memory follows it, a different
garbage each read, so cells never trained came back flagged finished over NaN weights. Written
whole, no flag chunk is ever read to be written; hashed, a damaged one is found and rewritten
from its record (`reset_damaged`), its cells' trained values kept.

Records are kept per storage chunk, not per job: the chunk grid is the store's, while how chunks
are grouped into jobs is a run's choice, so a store resumed with other workers finds the same
records. A region smaller than a chunk (a refinement point) keeps the other cells the chunk's
record vouched for before the write, when the record still held then.

Why records and not zarr's checksum codec (numcodecs CRC32C on every array): a codec catches a
corrupted or truncated chunk, but a deleted chunk reads back as the fill value, a chunk file
swapped with another block's decodes cleanly, and a flag set without its data passes; checking
it also means decoding every chunk. A record catches all four by hashing files, no decoding.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sweep.locks import flocked

FLAG = "finished"
RECORDS = ".commits"  # inside the store, so the records travel with it
TEMPLATE = "template"
MISSING_FILE = "absent"  # the hash recorded for a chunk file that is not there


class IntegrityError(RuntimeError):
    """A store whose layout the records cannot cover; str() is a one-line message."""


@dataclass(frozen=True)
class Array:
    """What the records need of one zarr array: its files and how they tile its dims."""

    name: str
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    chunks: tuple[int, ...]  # chunk length per dim
    grid: tuple[int, ...]  # chunks per dim
    folder: Path
    key: Any  # chunk index -> file name relative to folder (zarr's own encoding)

    def files(self, lead: tuple[int, ...]) -> list[str]:
        """The chunk files whose leading chunk index is `lead` (every trailing chunk)."""
        rest = itertools.product(*(range(n) for n in self.grid[len(lead) :]))
        return [self.key((*lead, *r)) for r in rest]


@dataclass(frozen=True)
class Cover:
    """A store's arrays sorted for the records: the flag, the cell arrays, the static ones."""

    flag: Array
    cells: dict[str, Array]
    static: dict[str, Array]

    @property
    def ndim(self) -> int:
        return len(self.flag.dims)


def _array(root: Path, arr: Any) -> Array:
    names = getattr(arr.metadata, "dimension_names", None) or arr.attrs.get("_ARRAY_DIMENSIONS")
    return Array(
        name=arr.path,
        dims=tuple(names or ()),
        shape=tuple(arr.shape),
        chunks=tuple(arr.chunks),
        grid=tuple(arr.cdata_shape),
        folder=root / arr.path,
        key=arr.metadata.encode_chunk_key,
    )


def cover(path: Path, flag: str = FLAG) -> Cover:
    """The arrays of the store at path, from its (consolidated) zarr metadata."""
    import zarr

    root = Path(path)
    group: Any = zarr.open_group(str(root), mode="r", use_consolidated=True)
    opened = dict(group.arrays())
    arrays = {name: _array(root, arr) for name, arr in opened.items()}
    if flag not in arrays:
        raise IntegrityError(f"{root}: no {flag!r} array, so no cells to check")
    f = arrays.pop(flag)
    k = len(f.dims)
    cells, static = {}, {}
    for name, a in sorted(arrays.items()):
        # a dimension coordinate (`seed`) is its dim's values, fixed by the config
        if a.dims[:k] == f.dims and name not in f.dims:
            if a.chunks[:k] != f.chunks:
                raise IntegrityError(
                    f"{root}: array {name} is chunked {a.chunks[:k]} over {list(f.dims)}, "
                    f"unlike {flag} {f.chunks}: its chunks would hold several regions"
                )
            cells[name] = a
        else:
            static[name] = a
    return Cover(f, cells, static)


def _hash(file: Path) -> str:
    # sha256: ~1.7 ms per MB here (SHA extensions; blake2b took 3.4), file reads cost more;
    # crc32 is faster still, but two different chunks collide once in 4e9
    try:
        return hashlib.sha256(file.read_bytes()).hexdigest()[:32]
    except FileNotFoundError:
        return MISSING_FILE


def _hashes(arrays: Mapping[str, Array], lead: tuple[int, ...]) -> dict[str, dict[str, str]]:
    return {n: {k: _hash(a.folder / k) for k in a.files(lead)} for n, a in arrays.items()}


def _record_path(path: Path, lead: tuple[int, ...] | str) -> Path:
    name = lead if isinstance(lead, str) else ".".join(map(str, lead))
    return Path(path) / RECORDS / f"{name}.json"


def _load(path: Path, lead: tuple[int, ...] | str) -> dict | None:
    try:
        rec = json.loads(_record_path(path, lead).read_text())
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def _save(path: Path, lead: tuple[int, ...] | str, rec: dict) -> None:
    """Write a record beside and rename it in: a reader sees the old record or the new one."""
    target = _record_path(path, lead)
    target.parent.mkdir(exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        tmp.write_text(json.dumps(rec, sort_keys=True))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _slices(c: Cover, region: Mapping[str, slice] | None) -> tuple[slice, ...]:
    region = region or {}
    extra = set(region) - set(c.flag.dims)
    if extra:
        raise IntegrityError(f"region dims {sorted(extra)} are not the cell dims {c.flag.dims}")
    out = []
    for d, n, size, s in zip(c.flag.dims, c.flag.grid, c.flag.chunks, c.flag.shape, strict=True):
        sl = region.get(d, slice(None))
        stop = n * size if sl.stop is None else sl.stop
        out.append(slice(sl.start or 0, min(stop, s)))
    return tuple(out)


# (chunk index, its size, the region's part of it in chunk coordinates, that part in region
# coordinates)
Touched = tuple[tuple[int, ...], tuple[int, ...], tuple[slice, ...], tuple[slice, ...]]


def _leads(c: Cover, idx: tuple[slice, ...]) -> Iterator[Touched]:
    """Each chunk a region (idx: within the store's shape) touches."""
    ranges = [
        range(sl.start // n, (sl.stop - 1) // n + 1)
        for sl, n in zip(idx, c.flag.chunks, strict=True)
    ]
    for lead in itertools.product(*ranges):
        cell = _chunk_cells(c, lead)
        part = tuple(
            slice(max(sl.start, a.start) - a.start, min(sl.stop, a.stop) - a.start)
            for sl, a in zip(idx, cell, strict=True)
        )
        at = tuple(
            slice(a.start + p.start - r.start, a.start + p.stop - r.start)
            for a, p, r in zip(cell, part, idx, strict=True)
        )
        yield lead, _chunk_size(c, lead), part, at


def _chunk_cells(c: Cover, lead: tuple[int, ...]) -> tuple[slice, ...]:
    """The store cells of one chunk (the last along a dim may be short)."""
    return tuple(
        slice(i * n, min((i + 1) * n, s))
        for i, n, s in zip(lead, c.flag.chunks, c.flag.shape, strict=True)
    )


def _chunk_size(c: Cover, lead: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(sl.stop - sl.start for sl in _chunk_cells(c, lead))


def _flag_file(c: Cover, lead: tuple[int, ...]) -> Path:
    return c.flag.folder / c.flag.key(lead)


def _committed(
    c: Cover, path: Path, lead: tuple[int, ...], size: tuple[int, ...], rec: dict | None = None
) -> np.ndarray:
    """(chunk cells) bool: the cells whose trained values the chunk's record vouches for; all
    False when the record is missing, covers other arrays, or any cell array's file no longer
    hashes to it. The flag file is not looked at (see `_flags_hold`)."""
    none = np.zeros(size, bool)
    rec = _load(path, lead) if rec is None else rec
    if rec is None or rec.get("cells_shape") != list(size):
        return none
    if rec.get("arrays") != _hashes(c.cells, lead):
        return none
    try:
        bits = np.unpackbits(np.frombuffer(bytes.fromhex(rec["cells"]), np.uint8))
        return bits[: int(np.prod(size))].astype(bool).reshape(size)
    except (KeyError, ValueError, TypeError):
        return none


def _flags_hold(c: Cover, lead: tuple[int, ...], rec: dict | None) -> bool:
    """Whether the chunk's flag file is the one its record was written with."""
    return rec is not None and rec.get("flag") == _hash(_flag_file(c, lead))


def _verified(c: Cover, path: Path, lead: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
    """(chunk cells) bool: committed, with the flag file as recorded (so the flags read are
    exactly these cells, without decoding them)."""
    rec = _load(path, lead)
    if not _flags_hold(c, lead, rec):
        return np.zeros(size, bool)
    return _committed(c, path, lead, size, rec)


def intact(path: Path, region: Mapping[str, slice] | None = None, flag: str = FLAG) -> np.ndarray:
    """(region's cells) bool: committed, and every chunk file, the flags' too, as recorded.

    region: cell dim -> slice (a missing dim: all of it); None: the whole store.
    """
    return _per_chunk(path, region, flag, _verified)


def committed(path: Path, flag: str = FLAG) -> np.ndarray:
    """(cells) bool: the cells whose values their chunk's record vouches for, whatever the flag
    files hold (`python -m sweep.migrate`: a format-2 record has no flag hash)."""
    return _per_chunk(path, None, flag, lambda c, p, lead, size: _committed(c, p, lead, size))


def _per_chunk(
    path: Path,
    region: Mapping[str, slice] | None,
    flag: str,
    judge: Callable[[Cover, Path, tuple[int, ...], tuple[int, ...]], np.ndarray],
) -> np.ndarray:
    """(region's cells) bool, each touched chunk's cells as judge(cover, path, lead, size)."""
    c = cover(path, flag)
    idx = _slices(c, region)
    out = np.zeros(tuple(sl.stop - sl.start for sl in idx), bool)
    for lead, size, part, at in _leads(c, idx):
        out[at] = judge(c, path, lead, size)[part]
    return out


def complete(path: Path, region: Mapping[str, slice], flag: str = FLAG) -> bool:
    """Whether every cell of a region is intact (see `intact`)."""
    return bool(intact(path, region, flag).all())


def _open_flags(c: Cover) -> Any:
    """The flag array, for writing (opened once per commit or repair, not per chunk)."""
    import zarr

    return zarr.open_array(str(c.flag.folder), mode="r+", zarr_format=2)


def _write_flags(
    c: Cover, path: Path, lead: tuple[int, ...], cells: np.ndarray, flags: Any
) -> None:
    """The chunk's flags written whole into `flags` (_open_flags; zarr reads nothing back for a
    whole chunk), then its record: the cell arrays' files and the flag file as they are now."""
    flags[_chunk_cells(c, lead)] = cells
    rec = {
        "cells_shape": list(cells.shape),
        "cells": np.packbits(cells.ravel()).tobytes().hex(),
        "arrays": _hashes(c.cells, lead),
        "flag": _hash(_flag_file(c, lead)),
    }
    _save(path, lead, rec)


@contextlib.contextmanager
def writing(
    path: Path, region: Mapping[str, slice], flag: str = FLAG
) -> Iterator[Callable[..., None]]:
    """Around the writes of a region: yields `commit(flags=None)`, to call once the cell arrays
    are written. It sets the region's cells to `flags` (region-shaped bool; default all True),
    writes each touched chunk's flags whole and records the chunk's files (`_write_flags`).
    Nothing is flagged or recorded without it (a failed or refused write).

    Holds an exclusive lock per touched chunk throughout: writers of different cells of one
    chunk (refinement points) would otherwise each rewrite the chunk's files from what they
    read before the other wrote, losing a cell that the record then vouched for.
    """
    c = cover(path, flag)
    idx = _slices(c, region)
    region_shape = tuple(sl.stop - sl.start for sl in idx)
    with contextlib.ExitStack() as held:
        kept = {}
        for lead, size, part, at in _leads(c, idx):  # index order: no deadlock
            held.enter_context(_chunk_lock(path, lead))
            whole = all(p.stop - p.start == n for p, n in zip(part, size, strict=True))
            # a chunk written in part keeps the cells its record vouched for before the write
            before = np.zeros(size, bool) if whole else _committed(c, path, lead, size)
            kept[lead] = (part, before, at)

        def commit(flags: np.ndarray | None = None) -> None:
            done = np.ones(region_shape, bool) if flags is None else np.asarray(flags, bool)
            if done.shape != region_shape:
                raise IntegrityError(f"flags of shape {done.shape} for a region {region_shape}")
            flags_array = _open_flags(c)
            for lead, (part, cells, at) in kept.items():
                cells[part] = done[at]
                _write_flags(c, path, lead, cells, flags_array)

        yield commit


def _chunk_lock(path: Path, lead: tuple[int, ...]) -> contextlib.AbstractContextManager[bool]:
    """The lock of one chunk's record (sweep.locks): required, and removed on release, so none
    is left in `.commits/`."""
    target = _record_path(path, lead).with_suffix(".lock")
    target.parent.mkdir(exist_ok=True)
    return flocked(target, transient=True, required=True)


@dataclass(frozen=True)
class Repair:
    """What `reset_damaged` did, by chunk index (e.g. "0.1.0")."""

    emptied: list[str]  # files deleted: their cells train again
    reflagged: list[str]  # only the flag file was damaged: rewritten from the record


def reset_damaged(path: Path, flag: str = FLAG) -> Repair:
    """Repair every chunk whose files are not as its record says. A chunk whose cell arrays
    still hash to its record but whose flag file does not gets its flags rewritten from the
    record (its trained values kept); any other has its files, the flags' and every cell
    array's, deleted, read back as the fill value until retrained. Why delete: zarr rewrites a
    chunk written in part from what it reads there, and a damaged chunk cannot be read."""
    c = cover(path, flag)
    emptied, reflagged = [], []
    flags = None  # opened for the first chunk that needs it
    for lead in np.ndindex(*c.flag.grid):
        if _sound(c, path, lead):  # the common case, without taking (making) a lock file
            continue
        with _chunk_lock(path, lead):  # not between a live writer's writes and its record
            if _sound(c, path, lead):
                continue
            name = ".".join(map(str, lead))
            vouched = _committed(c, path, lead, _chunk_size(c, lead))
            if vouched.any():
                flags = _open_flags(c) if flags is None else flags
                _write_flags(c, path, lead, vouched, flags)
                reflagged.append(name)
                continue
            for a in (c.flag, *c.cells.values()):
                for k in a.files(lead):
                    (a.folder / k).unlink(missing_ok=True)
            _record_path(path, lead).unlink(missing_ok=True)
            emptied.append(name)
    return Repair(emptied, reflagged)


def _sound(c: Cover, path: Path, lead: tuple[int, ...]) -> bool:
    """A chunk with no files, or one whose record vouches for cells and holds for every file,
    the flags' included."""
    files = [a.folder / k for a in (c.flag, *c.cells.values()) for k in a.files(lead)]
    if not any(f.exists() for f in files):
        return True
    return bool(_verified(c, path, lead, _chunk_size(c, lead)).any())


def record_template(path: Path, flag: str = FLAG) -> None:
    """Record the static arrays' files (call once the template is written)."""
    c = cover(path, flag)
    _save(path, TEMPLATE, {"arrays": {n: _static_hashes(a) for n, a in c.static.items()}})


def _static_hashes(a: Array) -> dict[str, str]:
    return {k: _hash(a.folder / k) for k in a.files(())}


def damaged_static(path: Path, flag: str = FLAG) -> list[str]:
    """Names of the static arrays that differ from the template record (or are missing from
    it, or it from the store); all of them when there is no record."""
    c = cover(path, flag)
    rec = _load(path, TEMPLATE)
    had = rec.get("arrays") if rec else None
    if not isinstance(had, dict):
        return sorted(c.static)
    names = set(had) | set(c.static)
    return sorted(
        n for n in names if n not in c.static or had.get(n) != _static_hashes(c.static[n])
    )
