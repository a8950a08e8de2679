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
import posixpath
import stat
from pathlib import Path

from invoke import task

from ..paths import repo_dir
from ..connections import NodeError, bounded_sftp
from ..inventory import BadInput
from ..render import command
from ..session import Outcome, checks_arguments, session_of


def sync_arguments(session, source=None, dest=None, exclude=None, **_):
    """(local directory, remote directory, exclude patterns), checked."""
    opts = session.options
    if not source or not Path(source).is_dir():
        raise BadInput(f"bad source {source!r}: not a local directory")
    local = Path(source).resolve()
    repo = repo_dir(opts)
    if dest is None:
        try:
            rel = local.relative_to(Path.cwd().resolve())
        except ValueError:
            raise BadInput(f"bad source {source!r}: outside this directory; say where it goes with --dest") from None
        remote = repo if str(rel) == "." else f"{repo}/{rel.as_posix()}"
    else:
        if any(ch in dest for ch in "\0\n") or not dest.strip() or dest.strip("/") == "":
            raise BadInput(f"bad --dest {dest!r}: a directory on the nodes (relative: in the workspace repo)")
        if dest.startswith("/"):
            remote = posixpath.normpath("/" + dest.lstrip("/"))
        else:
            inside = posixpath.normpath(dest)
            if inside == ".." or inside.startswith("../"):
                raise BadInput(f"bad --dest {dest!r}: climbs out of the workspace repo ({repo}); "
                               "give an absolute path to write elsewhere")
            remote = repo if inside == "." else f"{repo}/{inside}"
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


def listing_command(remote, workspace):
    """One command: where ``remote`` (or its deepest existing parent) really is, where the
    workspace really is, then `LISTING` of ``remote`` (nothing when it does not exist yet)."""
    return (f"d={command(remote)}; while [ ! -e \"$d\" ] && [ ! -L \"$d\" ]; do d=$(dirname -- \"$d\"); done; "
            f"printf '%s\\0%s\\0%s\\0' \"$d\" \"$(cd -P -- \"$d\" 2>/dev/null && pwd)\" "
            f"\"$(cd -P -- {command(workspace)} 2>/dev/null && pwd)\"; "
            f"cd -- {command(remote)} 2>/dev/null && {LISTING} || true")


def real_place(remote, workspace, found):
    """Check that no symbolic link leads ``remote`` elsewhere: the workspace may be a link
    (used as it is, as bootstrap uses it); anything below it, or any other destination, may not.
    ``found``: `listing_command`'s first three fields. Returns the part of ``remote`` that
    exists, or raises `NodeError` naming where it really leads."""
    existing, real, real_ws = found
    want = existing
    if real_ws and (existing == workspace or existing.startswith(workspace + "/")):
        want = real_ws + existing[len(workspace):]
    if real != want:
        raise NodeError(f"{existing} leads to {real or '(nowhere)'}: a symbolic link on the way; "
                        "sync never writes through one")
    return existing


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


def through_links(send, mine, theirs):
    """What the node has that ``send`` would be written through: a link (or a file) where a
    directory of ours is or goes. The node's paths, in order."""
    bad = []
    for rel in send:
        parts = rel.split("/")
        wanted_dirs = ["/".join(parts[:i]) for i in range(1, len(parts))] + ([rel] if mine[rel][0] == "d" else [])
        bad += [p for p in wanted_dirs if theirs.get(p, ("d",))[0] != "d" and p not in bad]
    return bad


def send_file(sftp, source, path, mode, mtime):
    """``source`` to ``path`` on the node: written to a temporary name that is created anew
    (exclusive: a link or file planted there is never written through), then renamed into place
    (a rename replaces a link, it never follows one)."""
    part = posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.multinode-sync")
    try:
        sftp.remove(part)  # a stale one of a sync that was stopped (or a link): the name, not its target
    except FileNotFoundError:
        pass
    with open(source, "rb") as src, sftp.open(part, "wbx") as dst:
        dst.chmod(mode)
        dst.set_pipelined(True)
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    sftp.utime(part, (mtime, mtime))
    sftp.posix_rename(part, path)


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

    workspace = session.options["workspace"]

    def push(node, cxn):
        fields = cxn.run(listing_command(remote, workspace), hide=True, in_stream=False, timeout=timeout).stdout
        fields = fields.split("\0", 3)
        existing = real_place(remote, workspace, fields[:3])
        theirs = remote_tree(fields[3] if len(fields) > 3 else "")
        send = differs(mine, theirs)
        linked = through_links(send, mine, theirs)
        if linked:
            raise NodeError(f"{remote}/{linked[0]} is a symbolic link (or a file) on the node where a directory "
                            f"goes: not written through{f' ({len(linked) - 1} more)' if len(linked) > 1 else ''}")
        files = [rel for rel in send if mine[rel][0] == "f"]
        size = sum(mine[rel][1] for rel in files)
        if not send:
            return Outcome("ok", f"{remote}: up to date ({len(mine)} entries)")
        if dry_run:
            shown = ", ".join(send[:8]) + (f" and {len(send) - 8} more" if len(send) > 8 else "")
            return Outcome("ok", f"{remote}: would send {len(files)} file(s), {human(size)}: {shown}")
        sftp = bounded_sftp(cxn, 60)
        missing = remote[len(existing):].strip("/")
        for depth, part in enumerate(missing.split("/") if missing else []):  # mkdir never follows a link
            sftp.mkdir(f"{existing.rstrip('/')}/{'/'.join(missing.split('/')[:depth + 1])}", 0o755)
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
                send_file(sftp, local / rel, path, mode, mtime)
        return Outcome("changed", f"{remote}: sent {len(files)} file(s), {human(size)}; "
                                  f"{len(mine) - len(send)} unchanged")

    session.each("sync", push)
