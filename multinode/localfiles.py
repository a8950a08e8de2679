"""Files on the laptop: atomic writes, backups, one lock, managed blocks.

The user's own lines are never rewritten: we replace only our marked block
(or entries we own), write a temporary file beside the target and rename it
over, and copy the previous version to ``<file>.multinode.bak`` first.
"""

import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def locked(path):
    """Hold an exclusive lock beside ``path`` for a read-modify-write."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(path.parent / f".{path.name}.multinode.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_text(path):
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return ""


def write_atomic(path, text, mode=None, backup=True):
    """Write ``text`` to ``path`` if it differs; return True when it changed.

    ``mode`` defaults to the file's current mode, or 0600 for a new file. A
    symlink is followed (dotfile managers link ~/.ssh/config). The file is
    never visible half-written nor, even briefly, wider than ``mode``.
    """
    path = Path(os.path.realpath(Path(path).expanduser()))
    old = read_text(path) if path.exists() else None
    if mode is None:
        mode = path.stat().st_mode & 0o777 if old is not None else 0o600
    if old == text and (old is None or path.stat().st_mode & 0o777 == mode):
        return False
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if backup and old is not None:
        shutil.copy2(path, path.with_name(path.name + ".multinode.bak"))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def begin_marker(name):
    return f"# BEGIN {name} (managed by multinode: edits inside this block are replaced)"


def end_marker(name):
    return f"# END {name}"


def replace_block(text, name, body, at_top=True):
    """Return ``text`` with the block ``name`` holding ``body``.

    An existing block is replaced where it stands; a new one goes at the top
    (``at_top``) or the end. Everything outside the block stays byte for byte.
    """
    begin, end = begin_marker(name), end_marker(name)
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == begin]
    if starts:
        start = starts[0]
        stop = next((i for i in range(start, len(lines)) if lines[i].rstrip("\n") == end), None)
        if stop is None:
            raise ValueError(f"{name}: '{begin}' without its '{end}' line; fix the file by hand")
        return "".join(lines[:start]) + block + "".join(lines[stop + 1 :])
    if at_top:
        return block + ("\n" + text if text else "")
    sep = "" if not text or text.endswith("\n") else "\n"
    return text + sep + block


def drop_block(text, name):
    """``text`` without the block ``name`` (and the blank line a new block was given after it)."""
    begin, end = begin_marker(name), end_marker(name)
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == begin), None)
    if start is None:
        return text
    stop = next((i for i in range(start, len(lines)) if lines[i].rstrip("\n") == end), None)
    if stop is None:
        raise ValueError(f"{name}: '{begin}' without its '{end}' line; fix the file by hand")
    if start == 0 and stop + 1 < len(lines) and lines[stop + 1] == "\n":
        stop += 1
    return "".join(lines[:start] + lines[stop + 1:])


def private_log(path):
    """``path`` opened for writing: created 0600, truncated, never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "w")


def log_dir(configured):
    """Where the node logs go: ``configured``, else a private directory of ours."""
    if configured:
        path = Path(configured).expanduser()
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state")
    path = base / "multinode" / "logs"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path
