"""Files a user or a run folder names, checked before they are opened."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from core.errors import UserError

KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
         stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a folder"}


def regular_file(path: str | os.PathLike, what: str = "it") -> Path:
    """`path` when it is a regular file (links followed). A FIFO or a device would block the reader
    forever (opening a FIFO waits for a writer), a folder fails later with a worse message."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot read: {err.strerror or err}") from None
    if not stat.S_ISREG(mode):
        kind = KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise UserError(f"{path}: is {kind}, but {what} must be a regular file")
    return Path(path)
