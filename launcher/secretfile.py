"""Files that hold secrets, written owner-only and atomically (no window where another user can read them)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, mode 0600 from the first byte: a fresh temporary file is created with
    O_CREAT|O_EXCL|O_NOFOLLOW and mode 0o600 (never an existing file or a planted symlink, whatever the
    umask), synced, then renamed over `path` (a symlink at `path` is replaced, not followed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(temp, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the mode argument is already 0600 or less; this makes it exactly 0600
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
