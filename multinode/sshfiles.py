"""The laptop's ssh files: known_hosts (read and edited line by line) and our block of ~/.ssh/config.

known_hosts is edited as OpenSSH reads it: only the lines (or, on a line
naming several hosts, the names) of our nodes' addresses are touched, hashed
entries included; every other byte stays. Our ``rentalN`` aliases live in one
marked block of ``~/.ssh/config``: a new block goes at the top, so its values
win over the user's wildcard entries, and ends with ``Host *`` so the user's
own top-level options still apply to every host.
"""

import os
import pwd
from pathlib import Path

from paramiko.hostkeys import HostKeyEntry, HostKeys

from .addresses import DEFAULT_PORT
from .localfiles import locked, read_text, replace_block, write_atomic

# Host key types, best first: where several are recorded for a machine, the best is used
# (the head gets the keys of one type per worker, so the types OpenSSH adds on the laptop
# after a plain `ssh rentalK` change nothing there).
KEY_TYPES = ["ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521", "ssh-rsa"]


def fingerprint(key):
    """A key as ``ssh-keygen -lf`` shows it: ``256 SHA256:... (ED25519)``."""
    return f"{key.get_bits()} {key.fingerprint} ({key.algorithm_name})"


def names_host(name, host):
    """Whether a known_hosts name (plain or hashed ``|1|salt|hash``) is ``host``.

    A damaged hashed name names no host (as ``ssh-keygen -F`` skips it)."""
    if name.startswith("|1|"):
        try:
            salt = name.split("|")[2]
            return HostKeys.hash_host(host, salt) == name
        except (IndexError, ValueError, TypeError):
            return False
    return name == host


def known_host_entries(path):
    """The usable entries of a known_hosts file.

    Lines paramiko cannot read (markers such as @revoked, keys of types it
    lacks, damaged lines) are skipped, as OpenSSH skips them, instead of
    failing every connection.
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    entries = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "@")):
            continue
        try:
            entry = HostKeyEntry.from_line(line)
        except Exception:  # noqa: BLE001  any damage (InvalidHostKey, bad base64, ...): skip the line
            continue
        if entry is not None:
            entries.append(entry)
    return entries


def keys_of(entries, address):
    """The keys that known_hosts ``entries`` hold for ``address`` (``addr`` or ``[addr]:port``, hashed too)."""
    return [e.key for e in entries if any(names_host(name, address) for name in e.hostnames)]


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


BLOCK = "multinode"


def _arg(value):
    value = str(value)
    return f'"{value}"' if any(ch.isspace() for ch in value) else value


def openssh_known_hosts():
    """The known_hosts OpenSSH reads by default: under the passwd home, whatever $HOME says."""
    return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh" / "known_hosts"


def _host(alias, hostname, user, port, identity, known_hosts, proxy):
    lines = [f"Host {alias}", f"    HostName {hostname}"]
    if user:
        lines.append(f"    User {user}")
    if port != DEFAULT_PORT:
        lines.append(f"    Port {port}")
    lines += [f"    IdentityFile {_arg(identity)}", "    IdentitiesOnly yes"]
    if known_hosts is not None and Path(known_hosts) != openssh_known_hosts():
        lines.append(f"    UserKnownHostsFile {_arg(known_hosts)}")  # where hostkeys recorded the keys
    if proxy:
        lines.append(f"    ProxyJump {proxy}")
    return lines


def ssh_config_block(nodes, identity, jump=None, known_hosts=None):
    """The ``Host rentalN`` entries for ``nodes`` (HostName: the public host as given, a name
    too, which OpenSSH verifies by that name), through the ``jump`` host's alias where there
    is one; a worker without a public address by its private address, through the head's alias."""
    lines = []
    if jump is not None:
        lines += _host(jump.alias, jump.public, jump.user, jump.port, identity, known_hosts, None)
    for node in nodes:
        proxy = nodes[0].alias if node.head_only else jump.alias if jump is not None else None
        lines += _host(node.alias, node.host, node.user, node.port, identity, known_hosts, proxy)
    lines.append("Host *")
    return "\n".join(lines)


def write_ssh_config(path, nodes, identity, jump=None, known_hosts=None):
    """Put our block into ``path``; return True when the file changed."""
    with locked(path):
        text = replace_block(read_text(path), BLOCK, ssh_config_block(nodes, identity, jump, known_hosts))
        return write_atomic(path, text, mode=0o600)


def best_of(keys):
    """The keys of ``keys`` of the best type (`KEY_TYPES`)."""
    rank = {kind: i for i, kind in enumerate(KEY_TYPES)}
    best = min((k.get_name() for k in keys), key=lambda kind: rank.get(kind, len(rank)), default=None)
    return [k for k in keys if k.get_name() == best]


def verified_keys(path, nodes):
    """{alias: the laptop's known_hosts keys of that node, of its best type}, nodes without one left out."""
    entries = known_host_entries(path)
    return {node.alias: best_of(keys_of(entries, node.address)) for node in nodes if keys_of(entries, node.address)}
