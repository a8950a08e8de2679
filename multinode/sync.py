"""sync: push a local directory to every node at once, only what differs.

Over the invocation's one strict connection per node (pinned host keys,
nothing of ``~/.ssh/config``) by SFTP: each node lists what it has (one
command: type, size, modification time), and only the files whose size or
time differ are sent (rsync's quick check), each to a temporary name and
renamed into place, with its mode and time kept. No rsync is needed on
either side: rented images often lack it (patchwork's rsync wrapper, the
other candidate, also builds an unquoted shell command line). Excludes,
a dry run, and a line per node saying what changed.
"""

import fnmatch
import os
import stat
from pathlib import Path

from invoke import task

from .bootstrap import repo_name
from .connections import bounded_sftp
from .inventory import BadInput
from .render import command
from .session import Outcome, checks_arguments, session_of


def sync_arguments(session, source=None, dest=None, exclude=None, **_):
    """(local directory, remote directory, exclude patterns), checked."""
    opts = session.options
    if not source or not Path(source).is_dir():
        raise BadInput(f"bad source {source!r}: not a local directory")
    local = Path(source).resolve()
    repo = f"{opts['workspace']}/{repo_name(opts['repo'])}"
    if dest is None:
        try:
            rel = local.relative_to(Path.cwd().resolve())
        except ValueError:
            raise BadInput(f"bad source {source!r}: outside this directory; say where it goes with --dest") from None
        remote = repo if str(rel) == "." else f"{repo}/{rel.as_posix()}"
    else:
        if any(ch in dest for ch in "\0\n") or not dest.strip() or dest.strip("/") == "":
            raise BadInput(f"bad --dest {dest!r}: a directory on the nodes (relative: in the workspace repo)")
        remote = dest if dest.startswith("/") else f"{repo}/{dest}"
    patterns = list(opts["sync"]["exclude"]) + [p.strip() for p in (exclude or "").split(",") if p.strip()]
    return local, remote.rstrip("/"), patterns


def excluded(rel, patterns):
    """Whether ``rel`` (a/b/c) is excluded: a pattern matches one of its names, or the whole path."""
    return any(fnmatch.fnmatch(part, p) for part in rel.split("/") for p in patterns) or \
        any(fnmatch.fnmatch(rel, p) for p in patterns)


def local_tree(root, patterns):
    """{relative path: (kind, size, mtime, mode, link target)} of ``root``, excludes left out."""
    tree = {}
    for top, dirs, files in os.walk(root):
        rel_top = os.path.relpath(top, root)
        rel_top = "" if rel_top == "." else rel_top + "/"
        dirs[:] = sorted(d for d in dirs if not excluded(rel_top + d, patterns))
        for name in dirs + sorted(files):
            rel = rel_top + name
            if name in files and excluded(rel, patterns):
                continue
            st = os.lstat(os.path.join(top, name))
            if stat.S_ISLNK(st.st_mode):
                tree[rel] = ("l", 0, int(st.st_mtime), 0, os.readlink(os.path.join(top, name)))
            elif stat.S_ISDIR(st.st_mode):
                tree[rel] = ("d", 0, 0, stat.S_IMODE(st.st_mode), None)
            elif stat.S_ISREG(st.st_mode):
                tree[rel] = ("f", st.st_size, int(st.st_mtime), stat.S_IMODE(st.st_mode), None)
    return tree


LISTING = "find . -mindepth 1 -printf '%y %s %T@ %P\\0%l\\0'"


def remote_tree(listing):
    """{relative path: (kind, size, mtime, link target)} from `LISTING`'s output."""
    tree = {}
    fields = listing.split("\0")
    for entry, target in zip(fields[::2], fields[1::2]):
        if entry.count(" ") >= 3:
            kind, size, mtime, rel = entry.split(" ", 3)
            if rel:
                tree[rel] = (kind, int(size), int(float(mtime)), target)
    return tree


def differs(mine, theirs):
    """What to send: files whose size or time differ, links whose target differs, what is missing."""
    send = []
    for rel, (kind, size, mtime, _, target) in mine.items():
        there = theirs.get(rel)
        if (there is None or there[0] != kind or (kind == "f" and there[1:3] != (size, mtime))
                or (kind == "l" and there[3] != target)):
            send.append(rel)
    return send


def human(n):
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


@checks_arguments(sync_arguments)
@task(help={"source": "the local directory whose contents go to every node",
            "dest": "where on the nodes (default: the same path inside the workspace repo; relative: in it)",
            "exclude": "more patterns to leave out, comma-separated (besides multinode.sync.exclude)",
            "dry_run": "list what would be sent, change nothing"})
def sync(c, source, dest=None, exclude=None, dry_run=False):
    """Push a local directory to every node at once: only files that differ, mode and time kept."""
    session = session_of(c)
    local, remote, patterns = sync_arguments(session, source, dest, exclude)
    mine = local_tree(local, patterns)
    timeout = session.options["check_timeout"]

    def push(node, cxn):
        make = "" if dry_run else f"mkdir -p -- {command(remote)} && "
        listing = cxn.run(f"{make}cd -- {command(remote)} 2>/dev/null && {LISTING} || true",
                          hide=True, in_stream=False, timeout=timeout).stdout
        theirs = remote_tree(listing)
        send = differs(mine, theirs)
        files = [rel for rel in send if mine[rel][0] == "f"]
        size = sum(mine[rel][1] for rel in files)
        if not send:
            return Outcome("ok", f"{remote}: up to date ({len(mine)} entries)")
        if dry_run:
            shown = ", ".join(send[:8]) + (f" and {len(send) - 8} more" if len(send) > 8 else "")
            return Outcome("ok", f"{remote}: would send {len(files)} file(s), {human(size)}: {shown}")
        sftp = bounded_sftp(cxn, 60)
        for rel in send:  # parents first: os.walk lists a directory before what it holds
            kind, _, mtime, mode, target = mine[rel]
            path = f"{remote}/{rel}"
            if kind == "d":
                sftp.mkdir(path, mode)
            elif kind == "l":
                if rel in theirs and theirs[rel][0] != "d":  # another link (or a file) there: replaced
                    sftp.remove(path)
                sftp.symlink(target, path)
            else:
                part = f"{remote}/{os.path.dirname(rel) + '/' if '/' in rel else ''}.{os.path.basename(rel)}.multinode-sync"
                sftp.put(str(local / rel), part)
                sftp.chmod(part, mode)
                sftp.utime(part, (mtime, mtime))
                sftp.posix_rename(part, path)
        return Outcome("changed", f"{remote}: sent {len(files)} file(s), {human(size)}; "
                                  f"{len(mine) - len(send)} unchanged")

    session.each("sync", push)
