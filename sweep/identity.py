"""Who a store is: its fingerprint (the settings that decide its numbers, hashed from the config
it records), its run id (one per creation) and how it was made (provenance).

The recorded `config_yaml` is authoritative: the fingerprint is a function of that text alone,
checked when a store is opened (sweep.reader) and never re-stamped, so a store whose config was
edited by hand no longer matches its fingerprint and is refused. Imports neither torch nor the
grid planner: the reader uses it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import subprocess
import uuid
from importlib import metadata
from pathlib import Path
from typing import IO, Any

import yaml
from omegaconf import OmegaConf

# Config sections that decide what a store holds: its layout (grid, chunk), its numbers (model,
# data, train) and, for a refined grid, which points are trained (refine). Two configs with the
# same sections resume each other's stores.
RESULT_SECTIONS = ("name", "model", "data", "train", "grid", "chunk", "refine")
# Keys of those sections that change neither the numbers nor the layout.
NOT_RESULTS = {
    "train": ("device", "checkpoint_seconds", "threads", "compile_cache"),
    "refine": ("cells",),  # set per job
}
# Refinement decides its next points by the phase of each trained point, classified with these.
REFINE_ANALYSIS = ("norm_threshold", "superposition_threshold")


class StaleWrite(RuntimeError):
    """A job about to write into a store that is not the one it was launched for."""


class InUse(RuntimeError):
    """The store is held by another process (a sweep's driver, a migration); `owner` is the
    pid it wrote into the lock file."""

    def __init__(self, path: Path, owner: str) -> None:
        super().__init__(f"store {path} is in use (pid {owner})")
        self.owner = owner


def hold_store(path: Path) -> IO[str]:
    """An open file holding the store's exclusive lock, for as long as it stays open: every
    process that changes a store as a whole (a sweep's driver, `python -m sweep.migrate`) takes
    it first, so none runs beside another. InUse if another holds it.

    The lock file sits beside the store (`.<name>.lock`), not inside, so that an overwrite or a
    migration can replace the store's folder while holding it. flock is released by the kernel
    if the holder dies.
    """
    handle = open(path.parent / f".{path.name}.lock", "a+")  # noqa: SIM115 - the caller closes
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "unknown"
        handle.close()
        raise InUse(path, owner) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def recorded_yaml(cfg: Any) -> str:
    """The config text a store records: resolved, as YAML."""
    return OmegaConf.to_yaml(cfg, resolve=True)


def fingerprint(cfg: Any) -> str:
    """Fingerprint of a config: the hash of what a store made with it records, so it equals
    `fingerprint_of_yaml` of that store's config_yaml by construction."""
    return fingerprint_of_yaml(recorded_yaml(cfg))


def fingerprint_of_yaml(text: str) -> str:
    """Hash of the result-deciding part of a recorded config (ValueError if unreadable)."""
    part = hashed(_parse(text))
    return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]


def _parse(text: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"not YAML ({' '.join(str(e).split())[:80]})") from None
    if not isinstance(raw, dict):
        raise ValueError("not a mapping of settings")
    return raw


def hashed(c: dict[str, Any]) -> dict[str, Any]:
    """The part of a (plain, resolved) config that the fingerprint hashes."""
    part: dict[str, Any] = {k: c.get(k) for k in RESULT_SECTIONS}
    for section, keys in NOT_RESULTS.items():
        part[section] = {k: v for k, v in (part[section] or {}).items() if k not in keys}
    axes = ((c.get("grid") or {}).get("axes")) or {}
    # The store's dims in order: the axes above are hashed as a mapping (sorted keys), and a
    # plan in another order would write its chunks across the wrong cells.
    part["dims"] = [*axes, "seed"]
    if (part["refine"] or {}).get("levels"):
        analysis = c.get("analysis") or {}
        part["refine_analysis"] = {k: analysis.get(k) for k in REFINE_ANALYSIS}
    return part


def differences(recorded: str, cfg: Any, most: int = 3) -> list[str]:
    """The hashed settings in which cfg differs from a recorded config, as `key=now (the
    store's: then)`, at most `most` of them."""
    then, now = _flat(hashed(_parse(recorded))), _flat(hashed(_parse(recorded_yaml(cfg))))
    keys = [k for k in [*now, *(k for k in then if k not in now)] if now.get(k) != then.get(k)]
    return [f"{k}={_short(now.get(k))} (the store's: {_short(then.get(k))})" for k in keys[:most]]


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _short(v: Any) -> str:
    text = "unset" if v is None else json.dumps(v)
    return text if len(text) <= 60 else text[:57] + "..."


def new_run_id() -> str:
    """A store's creation id: unique per creation, so an overwritten store gets a new one."""
    return uuid.uuid4().hex[:16]


def identity(path: Path) -> dict:
    """The run identity of a store on disk: its fingerprint and creation id (read fresh from
    .zattrs, never from a cache, since an overwrite may just have replaced the store)."""
    try:
        attrs = json.loads((Path(path) / ".zattrs").read_text())
    except (OSError, ValueError):
        return {}
    return {"fingerprint": attrs.get("fingerprint"), "run_id": attrs.get("run_id")}


def check_identity(path: Path, expected: dict) -> None:
    """Refuse to touch a store whose identity is not the one a job was launched for: its
    creation id (unique to one creation) and its fingerprint (the job's own config's: a job
    whose settings differ from the store's, run id or not, would write other numbers there)."""
    found = identity(path)
    keys = [k for k in ("run_id", "fingerprint") if expected.get(k) is not None]
    if any(found.get(k) != expected.get(k) for k in keys):
        raise StaleWrite(
            f"{path}: the store there is run {found.get('run_id')} (fingerprint "
            f"{found.get('fingerprint')}), not run {expected.get('run_id')} "
            f"(fingerprint {expected.get('fingerprint')}) this job belongs to; "
            "it was overwritten or replaced, so this job writes nothing"
        )


def provenance(cfg: Any, schema_version: int) -> dict:
    """Attrs recording how a store was made: config, versions, commit, machine."""
    from sweep import __version__

    libs = {}
    for lib in ("torch", "numpy", "xarray", "zarr", "hydra-core", "submitit", "dask"):
        try:
            libs[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            libs[lib] = "absent"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    # A CPU-only torch build ("+cpu") has no CUDA: then the driver, whose jobs may all run in
    # worker processes, need not import torch (seconds) only to say so.
    device = "cpu"
    if not libs["torch"].endswith("+cpu"):
        import torch  # only the driver, creating a store, gets here

        if torch.cuda.is_available():
            device = "cuda: " + torch.cuda.get_device_name()
    text = recorded_yaml(cfg)
    return {
        "schema_version": schema_version,
        "grid_name": str(cfg.name),
        "fingerprint": fingerprint_of_yaml(text),
        "config_yaml": text,
        "toysweep_version": __version__,
        "git_commit": commit or "unknown",
        "library_versions": json.dumps(libs),
        "device": device,
        "host": platform.node(),
    }
