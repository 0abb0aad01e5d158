"""Checkpoint and savepoint storage: layout, metadata, validation, and state redistribution.

Layout (Flink's, on a local path or ``s3://`` URI, see :mod:`emrflow.fs`)::

    <state.checkpoints.dir>/<job id>/chk-<n>/task-<vertex>-<subtask>.state
    <state.checkpoints.dir>/<job id>/chk-<n>/_metadata
    <savepoint dir>/savepoint-<job id prefix>-<n>/...            (same files)

Every subtask writes one state file per checkpoint: a pickled
``{operator uid: snapshot bytes}``. The JobManager writes one more per split enumerator
(``enumerator-<vertex>.state``, the cloudpickled ``SplitEnumerator.snapshot_state``), listed in
``_metadata`` like a task's file with ``"subtask": -1`` and ``"enumerator": <source uid>``.
The JobManager writes ``_metadata`` (JSON) only after every subtask acknowledged, listing each file with its size and
CRC-32, so a checkpoint without ``_metadata`` was never completed and one whose
files do not match it is corrupt; :func:`load_metadata` detects both and
:func:`find_latest_valid` falls back to the previous checkpoint, logging why.

Restoring matches operators by ``uid`` (``auto-<id>`` when the program set
none, as Flink derives ids from the topology) and redistributes keyed state by
key group when the parallelism changed (:func:`plan_restore`).
"""

from __future__ import annotations

import json
import logging
import pickle
import re
import time
import zlib
from typing import Any

from emrflow import fs
from emrflow.errors import EmrflowError
from emrflow.fs import FileSystem
from emrflow.graph.keygroups import key_group_range

log = logging.getLogger("emrflow.checkpoint")

METADATA = "_metadata"
FORMAT_VERSION = 1
_CHK = re.compile(r"^chk-(\d+)$")


class CheckpointError(EmrflowError):
    """A checkpoint or savepoint cannot be used (missing, corrupt, or not matching the job)."""


def operator_uid(node_or_dict: Any) -> str:
    """Return the operator's state id: its ``uid``, or ``auto-<operator id>`` when none was set."""
    uid = node_or_dict["uid"] if isinstance(node_or_dict, dict) else node_or_dict.uid
    op_id = node_or_dict["id"] if isinstance(node_or_dict, dict) else node_or_dict.id
    return uid if uid else f"auto-{op_id}"


def task_file_name(vertex_id: int, subtask: int) -> str:
    """Name of the state file of one subtask in a checkpoint directory."""
    return f"task-{vertex_id}-{subtask}.state"


def write_task_state(filesystem: FileSystem, directory: str, vertex_id: int, subtask: int,
                     snapshots: dict[str, bytes]) -> dict:
    """Write one subtask's operator snapshots; return its metadata entry (file, size, crc32).

    Args:
        filesystem: the job's file system.
        directory: the checkpoint's directory (local path or s3:// URI).
        vertex_id, subtask: which subtask.
        snapshots: ``{operator uid: pickled snapshot}``.
    """
    data = pickle.dumps(snapshots, protocol=5)
    name = task_file_name(vertex_id, subtask)
    filesystem.write_bytes(fs.join(directory, name), data)
    return {"file": name, "size": len(data), "crc32": zlib.crc32(data)}


def write_metadata(filesystem: FileSystem, directory: str, metadata: dict) -> None:
    """Write ``_metadata`` (the last file of a checkpoint; its presence marks it complete)."""
    filesystem.write_bytes(fs.join(directory, METADATA), json.dumps(metadata, indent=1).encode())


def load_metadata(filesystem: FileSystem, directory: str, verify: bool = True) -> dict:
    """Read and check a checkpoint's ``_metadata``; with ``verify``, also every state file.

    Raises:
        CheckpointError: no ``_metadata`` (an incomplete checkpoint), unreadable metadata,
            or a state file missing or whose size or CRC-32 differs from the metadata.
    """
    path = fs.join(directory, METADATA)
    try:
        raw = filesystem.read_bytes(path)
    except (FileNotFoundError, OSError):
        raise CheckpointError(f"{directory} is not a completed checkpoint or savepoint: "
                              f"no {METADATA} file") from None
    try:
        meta = json.loads(raw)
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(f"unknown format {meta.get('format')!r}")
    except (ValueError, AttributeError) as exc:
        raise CheckpointError(f"{path} is corrupt: {exc}") from None
    if verify:
        for t in meta["tasks"]:
            f = fs.join(directory, t["file"])
            try:
                data = filesystem.read_bytes(f)
            except (FileNotFoundError, OSError):
                raise CheckpointError(f"{directory} is corrupt: state file {t['file']} is missing") from None
            if len(data) != t["size"]:
                raise CheckpointError(f"{directory} is corrupt: state file {t['file']} has {len(data)} "
                                      f"bytes, the metadata says {t['size']} (truncated?)")
            if zlib.crc32(data) != t["crc32"]:
                raise CheckpointError(f"{directory} is corrupt: state file {t['file']} fails its "
                                      "CRC-32 check")
    meta["path"] = directory
    return meta


def checkpoint_dirs(filesystem: FileSystem, job_dir: str) -> list[tuple[int, str]]:
    """Return ``[(n, chk-n directory)]`` under a job's checkpoint directory, newest first."""
    out = []
    for name in filesystem.listdir(job_dir):
        m = _CHK.match(name)
        if m:
            out.append((int(m.group(1)), fs.join(job_dir, name)))
    return sorted(out, reverse=True)


def find_latest_valid(filesystem: FileSystem, path: str) -> dict:
    """Resolve ``emrflow run -s PATH``: a checkpoint/savepoint directory, or a job's checkpoint directory.

    For a job's directory (holding ``chk-<n>`` directories) the newest valid
    checkpoint wins; incomplete or corrupt ones are skipped with a warning that
    says why.

    Raises:
        CheckpointError: nothing usable at ``path``.
    """
    if filesystem.exists(fs.join(path, METADATA)):
        return load_metadata(filesystem, path)
    chks = checkpoint_dirs(filesystem, path)
    if not chks:
        raise CheckpointError(f"no checkpoint or savepoint at {path}: expected a directory with a "
                              f"{METADATA} file, or a job's checkpoint directory with chk-<n> directories")
    problems = []
    for n, d in chks:
        try:
            meta = load_metadata(filesystem, d)
        except CheckpointError as exc:
            log.warning("skipping checkpoint chk-%d: %s; trying the previous one", n, exc)
            problems.append(str(exc))
            continue
        return meta
    raise CheckpointError(f"no valid checkpoint under {path}: " + "; ".join(problems))


def remove(filesystem: FileSystem, directory: str) -> None:
    """Delete a checkpoint directory (best effort; failures are logged)."""
    try:
        filesystem.delete(directory)
    except OSError as exc:
        log.warning("could not delete %s: %s", directory, exc)


# -- restore planning ------------------------------------------------------------------------------

def plan_restore(meta: dict, topology: dict, allow_non_restored: bool) -> dict:
    """Match a checkpoint's operators to a job; return what each subtask must read.

    Returns:
        ``{"path": dir, "checkpoint_id": n, "operators": {uid: {"parallelism": old p,
        "max_parallelism": m, "files": {old subtask: file}}}}``, for the operators of
        ``topology`` that have state in the checkpoint.

    Raises:
        CheckpointError: the checkpoint holds state of an operator the job does not have
            (unless ``allow_non_restored``), or an operator's max parallelism changed.
    """
    state_ops: dict[str, dict] = {}
    for t in meta["tasks"]:
        for uid, info in t.get("operators", {}).items():
            entry = state_ops.setdefault(uid, {"parallelism": info["parallelism"],
                                               "max_parallelism": info["max_parallelism"],
                                               "name": info.get("name", uid), "files": {}})
            entry["files"][t["subtask"]] = t["file"]
    job_ops = {}
    for v in topology["vertices"]:
        for o in v["operators"]:
            job_ops[operator_uid(o)] = (o, v)
    missing = [uid for uid in state_ops if uid not in job_ops]
    if missing and not allow_non_restored:
        names = ", ".join(f"{state_ops[u]['name']!r} (uid {u})" for u in missing)
        raise CheckpointError(
            f"{meta['path']} holds state of operators this job does not have: {names}; "
            "give them the same uid as before, or pass --allow-non-restored-state to drop that state")
    for uid, entry in state_ops.items():
        if uid in job_ops:
            v = job_ops[uid][1]
            if v["max_parallelism"] != entry["max_parallelism"]:
                raise CheckpointError(
                    f"operator {entry['name']!r} (uid {uid}) was checkpointed with max parallelism "
                    f"{entry['max_parallelism']}, the job now has {v['max_parallelism']}; keyed state "
                    "cannot move between different numbers of key groups (pipeline.max-parallelism)")
    # split enumerators' state files (SplitSource), by the source operator's uid
    enumerators = {t["enumerator"]: t["file"] for t in meta["tasks"]
                   if t.get("enumerator") and t["enumerator"] in job_ops}
    return {"path": meta["path"], "checkpoint_id": meta["checkpoint_id"],
            "operators": {u: e for u, e in state_ops.items() if u in job_ops},
            "enumerators": enumerators}


class StateReader:
    """Reads a restoring subtask's shares of operator snapshots (files are read once each)."""

    def __init__(self, filesystem: FileSystem, plan: dict):
        self.filesystem = filesystem
        self.plan = plan
        self._files: dict[str, dict] = {}

    def _file(self, name: str) -> dict:
        data = self._files.get(name)
        if data is None:
            data = self._files[name] = pickle.loads(self.filesystem.read_bytes(fs.join(self.plan["path"], name)))
        return data

    def parts(self, uid: str, subtask: int, parallelism: int) -> tuple[list, range | None, int] | None:
        """Return ``([(old subtask, snapshot bytes)], key groups or None, old parallelism)``.

        With the old parallelism, subtask ``i`` gets old subtask ``i``'s snapshot and no
        key-group filter; otherwise every old subtask's snapshot and the key-group range
        the new subtask owns. ``None``: the operator has no state in the checkpoint.
        """
        entry = self.plan["operators"].get(uid)
        if entry is None:
            return None
        old_p = entry["parallelism"]
        files = {int(k): v for k, v in entry["files"].items()}
        if old_p == parallelism:
            f = files.get(subtask)
            return ([(subtask, self._file(f)[uid])] if f else []), None, old_p
        snaps = [(i, self._file(files[i])[uid]) for i in sorted(files)]
        return snaps, key_group_range(entry["max_parallelism"], parallelism, subtask), old_p

    def all_parts(self, uid: str) -> list[tuple[int, bytes]] | None:
        """Every former subtask's snapshot of operator ``uid``: ``[(old subtask, bytes)]``
        (the split states of a SplitSource, redistributed by ``split_owner``); ``None``: no state."""
        entry = self.plan["operators"].get(uid)
        if entry is None:
            return None
        files = {int(k): v for k, v in entry["files"].items()}
        return [(i, self._file(files[i])[uid]) for i in sorted(files)]


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds."""
    return int(time.time() * 1000)
