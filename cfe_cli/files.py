"""Writing outputs safely: the one atomic-write helper, JSON files and output folders.

A leaf module (standard library and :mod:`cfe_cli.errors` only). Every writer writes a
temporary file (``.<name>.<random>.tmp``) in the destination folder and renames it with
:func:`os.replace`, so a reader never sees half a file and a killed run leaves no partial output.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cfe_cli.errors import InputError


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary file is removed if the body raises. A folder that cannot be created or
    written raises :class:`InputError`.
    """
    dest = Path(path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    except OSError as err:
        raise InputError(f"cannot write to folder {str(dest.parent)!r}: {err.strerror or err}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; give the usual permissions of a new file
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON, atomically; an unwritable file is an InputError."""
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(obj, indent=2))
    except OSError as e:
        raise InputError(f"cannot write {path}: {e.strerror or e}") from None
    return Path(path)


def out_dir(out: str | os.PathLike[str]) -> Path:
    """Create the output folder; one that cannot be created or written is an InputError."""
    d = Path(out)
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"cannot create output folder {d}: {e.strerror}") from None
    if not os.access(d, os.W_OK):
        raise InputError(f"output folder is not writable: {d}")
    return d
