"""hostkeys: forget stale host keys of reinstalled machines, record the new ones.

known_hosts is edited line by line: only the lines (or, on a line naming
several hosts, the names) of our nodes' addresses are touched, hashed
entries included; every other byte stays. A node whose recorded entry is
already exactly its current key is left as it is.
"""

from invoke import Collection, task

from .connections import fetch_host_key, fingerprint, names_host
from .localfiles import locked, read_text, write_atomic
from .session import Outcome, session_of


def entry_line(host, key):
    return f"{host} {key.get_name()} {key.get_base64()}\n"


def _hosts_named(fields, hosts):
    """Which of ``hosts`` an entry line names (comments and @markers: none)."""
    if len(fields) < 3 or fields[0].startswith(("#", "@")):
        return set()
    names = fields[0].split(",")
    return {h for h in hosts for n in names if names_host(n, h)}


def _current(lines, key):
    """Whether known_hosts ``lines`` of one host record ``key`` and no other key of its type."""
    recorded = [tuple(line.split()[1:3]) for line in lines]
    same_type = {blob for kind, blob in recorded if kind == key.get_name()}
    return same_type == {key.get_base64()}


def update_known_hosts(text, keys):
    """Map each host of ``keys`` ({host: key}) to that key alone.

    Returns (new_text, {host: changed?}). A host whose entries hold its
    current key, and no other key of that type, is not touched: the keys of
    other types OpenSSH records beside ours after a plain ``ssh`` (its
    UpdateHostKeys) are the same machine's. Others lose their old entries
    (just their name, on a line shared with other hosts) and get one line at
    the end.
    """
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    entries = {host: [] for host in keys}
    for line in lines:
        for host in _hosts_named(line.split(), keys):
            entries[host].append(line)
    changed = {host: not _current(entries[host], key) for host, key in keys.items()}
    stale = {host for host, c in changed.items() if c}
    if not stale:
        return text, changed
    out = []
    for line in lines:
        fields = line.split()
        ours = _hosts_named(fields, stale)
        if not ours:
            out.append(line)
            continue
        kept = [n for n in fields[0].split(",") if not any(names_host(n, h) for h in ours)]
        if kept:  # a line shared with the user's other hosts keeps those names
            out.append(line.replace(fields[0], ",".join(kept), 1))
    out.extend(entry_line(host, keys[host]) for host in keys if host in stale)
    return "".join(out), changed


@task
def hostkeys(c):
    """Record each node's current SSH host key; drop stale ones.

    Run it once for new or reinstalled machines. Every other task refuses a
    node whose key is unknown or has changed.
    """
    session = session_of(c)
    timeout = session.settings.connect_timeout
    found = session.each(
        "hostkeys", lambda node: Outcome("ok", value=fetch_host_key(node, timeout)), connect=False, quiet=True
    )
    by_alias = {n.alias: n for n in session.nodes}
    keys = {by_alias[alias].address: out.value for alias, out in found.items()}
    path = session.settings.known_hosts
    with locked(path):
        text, changed = update_known_hosts(read_text(path), keys)
        if any(changed.values()):
            write_atomic(path, text)
    for alias, out in found.items():
        node = by_alias[alias]
        status = "changed" if changed[node.address] else "ok"
        session.report.line("hostkeys", node, status, fingerprint(out.value))


ns = Collection("hostkeys")
ns.add_task(hostkeys, default=True)
