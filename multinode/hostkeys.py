"""hostkeys: record the host keys of new machines; refuse changed keys of known ones.

Keys are pinned: a machine of the remembered cluster whose key changed is
refused (both fingerprints shown) until the user says it was reinstalled
(``--reinstalled rental2``). A node seen for the first time, or an address
that is not a machine of the remembered cluster (a new rental on a recycled
address), gets its key recorded, the old fingerprint shown as replaced.

known_hosts is edited line by line: only the lines (or, on a line naming
several hosts, the names) of our nodes' addresses are touched, hashed
entries included; every other byte stays. A node whose recorded entries
already hold its current key is left as it is.
"""

from invoke import Collection, task

from .connections import HINT, NodeError, fetch_host_key, fingerprint, keys_of, known_host_entries, names_host
from .inventory import BadInput
from .localfiles import locked, read_text, write_atomic
from .session import Outcome, checks_arguments, named_nodes, session_of


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
    out = forget_hosts(lines, stale)
    out.extend(entry_line(host, keys[host]) for host in keys if host in stale)
    return "".join(out), changed


def forget_hosts(lines, hosts):
    """known_hosts ``lines`` without ``hosts``' entries (their names alone, where a line names others too)."""
    out = []
    for line in lines:
        fields = line.split()
        ours = _hosts_named(fields, hosts)
        if not ours:
            out.append(line)
            continue
        kept = [n for n in fields[0].split(",") if not any(names_host(n, h) for h in ours)]
        if kept:  # a line shared with the user's other hosts keeps those names
            out.append(line.replace(fields[0], ",".join(kept), 1))
    return out


def reinstalled_nodes(session, value):
    """The nodes named by ``--reinstalled`` (aliases or addresses, or ``all``), checked."""
    if not value:
        return set()
    if str(value).strip() == "all":
        return {n.alias for n in session.nodes}
    return {n.alias for n in named_nodes(session, value, "reinstalled", also=", or all")}


@checks_arguments(lambda session, reinstalled=None, **_: reinstalled_nodes(session, reinstalled))
@task(help={"reinstalled": "nodes whose new host key to accept (aliases or addresses, comma-separated, or all): "
                           "machines of the remembered cluster that were reinstalled"})
def hostkeys(c, reinstalled=None):
    """Record each new node's SSH host key; refuse a known node whose key changed.

    Every other task refuses a node whose key is unknown or has changed.
    """
    session = session_of(c)
    try:
        accept = reinstalled_nodes(session, reinstalled)
    except BadInput as exc:
        raise exc.exit() from None
    timeout = session.settings.connect_timeout
    path = session.settings.known_hosts
    entries = known_host_entries(path)

    def check(node):
        key = fetch_host_key(node, timeout)
        old = keys_of(entries, node.address)
        if not old or any(k.get_name() == key.get_name() and k.get_base64() == key.get_base64() for k in old) \
                or not session.pinned(node) or node.alias in accept:
            return Outcome("ok", value=(key, old))
        same_type = [k for k in old if k.get_name() == key.get_name()] or old
        raise NodeError(f"host key of {node.address} changed: known_hosts has "
                        f"{', '.join(fingerprint(k) for k in same_type)}, the node offers {fingerprint(key)}; "
                        + HINT.format(alias=node.alias))

    found = session.each("hostkeys", check, connect=False, quiet=True)
    by_alias = {n.alias: n for n in session.nodes}
    keys = {by_alias[alias].address: out.value[0] for alias, out in found.items()}
    with locked(path):
        text, changed = update_known_hosts(read_text(path), keys)
        if any(changed.values()):
            write_atomic(path, text)
    for alias, out in found.items():
        node, (key, old) = by_alias[alias], out.value
        if not changed[node.address]:
            session.report.line("hostkeys", node, "ok", fingerprint(key))
            continue
        replaced = [k for k in old if k.get_base64() != key.get_base64()]
        session.report.line("hostkeys", node, "changed", f"recorded {fingerprint(key)}" + (
            f" (replaced {', '.join(fingerprint(k) for k in replaced)})" if replaced else ""))


ns = Collection("hostkeys")
ns.add_task(hostkeys, default=True)
