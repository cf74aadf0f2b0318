"""Checkpoints: written atomically (temp file, fsync, rename, fsync of the folder), read with ``weights_only``.

A checkpoint is a dict of tensors and plain values (model, optimizer and
scheduler state, RNG state, position in the run). It is only ever read from
the server's own data directory, at a path made from a server-generated job
id, and with ``torch.load(weights_only=True)``, which refuses anything but
tensors and primitive containers::

    >>> import tempfile, torch
    >>> path = Path(tempfile.mkdtemp()) / "job.pt"
    >>> save_checkpoint(path, {"epoch": 3, "w": torch.ones(2)})
    >>> load_checkpoint(path)["epoch"], sorted(p.name for p in path.parent.iterdir())
    (3, ['job.pt'])
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
from pathlib import Path
from typing import IO, Any, cast

import torch

__all__ = ["CHECKPOINT_MESSAGE", "DISK_FULL", "checkpoint_message", "disk_full", "error_chain", "save_checkpoint",
           "save_checkpoint_bytes", "load_checkpoint", "remove_checkpoint"]

log = logging.getLogger("lossd.server.training")

#: Prefix of a worker's message that carries its checkpoint file's bytes (with a shared job store, which keeps
#: checkpoints): the event that follows it is stored with it. A serialized ``JobEvent`` never starts with a zero
#: byte (it would be a field numbered 0, which protobuf does not allow), so the two cannot be confused.
CHECKPOINT_MESSAGE = b"\x00"


def checkpoint_message(path: Path) -> bytes:
    """The message that sends the checkpoint at ``path`` (just written by this process) to the server."""
    return CHECKPOINT_MESSAGE + path.read_bytes()


#: What a job's INTERRUPTED event and a refused TrainJob say while the data directory is full.
DISK_FULL = "data directory full"


def disk_full(error: BaseException) -> bool:
    """Whether ``error``, or an error it was raised from or while handling, is the file system saying it is
    full (ENOSPC, EDQUOT): ``torch.save``'s zip writer answers a full disk with a ``RuntimeError`` ("unexpected
    pos") raised while handling the ENOSPC, which read as a defect failed the job instead of interrupting it.

    >>> disk_full(OSError(errno.ENOSPC, "No space left on device")), disk_full(OSError(errno.EACCES, "no"))
    (True, False)
    """
    return any(isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) for e in error_chain(error))


def error_chain(error: BaseException, most: int = 16) -> list[BaseException]:
    """``error`` and the errors it was raised from or while handling (``__cause__``, ``__context__``), nearest
    first, at most ``most``.

    >>> try:
    ...     try:
    ...         raise OSError(28, "full")
    ...     except OSError:
    ...         raise RuntimeError("unexpected pos")
    ... except RuntimeError as e:
    ...     [type(x).__name__ for x in error_chain(e)]
    ['RuntimeError', 'OSError']
    """
    chain: list[BaseException] = []
    at: BaseException | None = error
    while at is not None and len(chain) < most and not any(at is seen for seen in chain):
        chain.append(at)
        at = at.__cause__ or at.__context__
    return chain


#: What ends a checkpoint file after torch's own bytes: this tag and their SHA-256 (torch.load reads past it).
#: A checkpoint whose digest does not match is damaged (a bit flipped on disk): the job starts over, where
#: torch.load took it and the job ended with other parameters (an audit flipped one bit of a tensor).
DIGEST_TAG = b"lossd-sha256"
_TRAILER = len(DIGEST_TAG) + hashlib.sha256().digest_size


class _Hashing:
    """A file that hashes what is written to it (torch.save writes a file object through ``write``)."""

    def __init__(self, f: Any) -> None:
        self.f, self.sha = f, hashlib.sha256()

    def write(self, data: Any) -> int:
        self.sha.update(data)
        return int(self.f.write(data))

    def flush(self) -> None:
        self.f.flush()


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Replace ``path`` with ``state``, then :data:`DIGEST_TAG` and the SHA-256 of torch's bytes, so that a crash at
    any moment leaves the old or the new file, whole, and damage later is found when it is read."""
    def write(f: Any) -> None:
        hashing = _Hashing(f)
        torch.save(state, cast(IO[bytes], hashing))
        f.write(DIGEST_TAG + hashing.sha.digest())

    _replace(path, write)


def save_checkpoint_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with a checkpoint's bytes (one read from a shared job store), as atomically."""
    _replace(path, lambda f: f.write(data))


def _replace(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    # The folder is made at start (``<data-dir>/checkpoints``); made again here when it was removed since
    # (a clean-up while the server runs): else every later job failed on its first checkpoint.
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable (POSIX)
        fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path``, or ``None`` when there is none; a ``ValueError`` when its bytes do not match
    their SHA-256 (a file without one, from a lossd before it, is read as it is)."""
    if not path.is_file():
        return None
    if _digest_matches(path) is False:
        raise ValueError(f"checkpoint {path.name} is damaged: its bytes do not match their SHA-256")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"checkpoint {path.name} is not a dict")
    return state


def _digest_matches(path: Path) -> bool | None:
    """Whether the file's bytes before its trailer have the SHA-256 in it; ``None`` without a trailer. Read in
    1 MiB pieces: a checkpoint may be hundreds of MB, which torch.load then reads again."""
    with open(path, "rb") as f:
        left = f.seek(0, os.SEEK_END) - _TRAILER
        if left < 0:
            return None
        f.seek(left)
        trailer = f.read()
        if not trailer.startswith(DIGEST_TAG):
            return None
        f.seek(0)
        sha = hashlib.sha256()
        while left > 0:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:  # cut short while read
                return False
            sha.update(chunk)
            left -= len(chunk)
    return sha.digest() == trailer[len(DIGEST_TAG):]


def remove_checkpoint(path: Path) -> bool:
    """Delete the checkpoint and any temp file a killed writer left next to it; False when a folder is in the
    place of one (logged and left: every start failed on it, IsADirectoryError in the sweep). Any other error
    is raised: a checkpoint that should be gone and is not would be resumed from."""
    gone = True
    for leftover in (path, *path.parent.glob(f".{path.name}.*.tmp")):
        try:
            leftover.unlink(missing_ok=True)
        except IsADirectoryError:
            log.warning("cannot delete %s: a folder is where a checkpoint goes; remove it by hand", leftover)
            gone = False
    return gone
