"""The cluster's nodes: parse, validate and remember them.

A node is written ``[USER@]PUBLIC[:PORT]:PRIVATE``: PUBLIC is an address or a
DNS name (the laptop resolves it at run time, see `addresses`); an IPv6
address goes in brackets: ``[2001:db8::5]:2222:10.0.0.5`` (private networks:
IPv4). An empty PUBLIC (``:PRIVATE``, ``USER@:PORT:PRIVATE``) is a worker with
no public address, reached through the head. ``-H`` takes a comma-separated
list of nodes, ``@FILE`` for a file, or ``-`` for standard input (`pasted`).
The first node is the head. A jump host in front of every node is
``[USER@]HOST[:PORT]`` (`parse_jump`). Every error is a `BadInput` naming the value.
"""

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .addresses import DEFAULT_PORT, BadInput, address, bracketed, host, ssh_address
from .localfiles import write_atomic
from .pasted import host_specs

USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
SAFE_RE = re.compile(r"^[A-Za-z0-9_.:@\[\]-]+$")
__all__ = ["BadInput", "DEFAULT_PORT", "Node", "parse_hosts", "parse_jump", "parse_node", "load_state", "save_state"]


@dataclass
class Node:
    nid: int
    alias: str
    public: str  # an address, a DNS name, or "" (reached through the head)
    private: str
    port: int = DEFAULT_PORT
    user: str | None = None  # the login user, once known
    explicit_user: bool = False  # given as USER@ by the user: never probed
    # For one run, never remembered: what a name resolves to; the head a head-only worker is behind.
    resolved: str = field(default="", compare=False, repr=False)
    via: str = field(default="", compare=False, repr=False)

    @property
    def head_only(self):
        """Whether the node has no public address: the laptop reaches it through the head."""
        return not self.public

    @property
    def host(self):
        """The name ssh uses for the node: its public host, else its private address."""
        return self.public or self.private

    @property
    def address(self):
        """How ssh names this node in known_hosts: ``host`` or ``[host]:port``."""
        return ssh_address(self.host, self.port)

    @property
    def target(self):
        """Where a connection to the node's sshd goes: a name's resolved address, else its host."""
        return self.resolved or self.host

    @property
    def machine(self):
        """What its host key pin is kept by (see `pins`)."""
        return (self.public, self.port, self.private, self.via)

    @property
    def spec(self):
        """The node as ``-H`` writes it."""
        user = f"{self.user}@" if self.user else ""
        return f"{user}{bracketed(self.public)}:{self.port}" + (f":{self.private}" if self.private else "")

    def same_machine(self, other):
        return (self.public, self.port, self.private) == (other.public, other.port, other.private)


def _split_colons(text):
    """Split on ':' outside brackets: '[::1]:22:x' -> ['[::1]', '22', 'x']."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == ":" and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return parts


def _port(value, spec):
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise BadInput(f"bad port {value!r} in {spec!r}: expected 1-65535")
    return int(value)


def _user_and_rest(spec, what="node"):
    if not spec:
        raise BadInput(f"empty {what} in the host list" if what == "node" else f"empty {what}")
    if not SAFE_RE.match(spec):
        bad = "".join(sorted({ch for ch in spec if not SAFE_RE.match(ch)}))
        raise BadInput(f"bad {what} {spec!r}: character(s) {bad!r} not allowed")
    if "@" not in spec:
        return None, spec
    user, _, rest = spec.rpartition("@")
    if not USER_RE.fullmatch(user):
        raise BadInput(f"bad user name {user!r} in {spec!r}")
    return user, rest


def parse_node(spec, nid=0, prefix="rental"):
    """Parse one ``[USER@]PUBLIC[:PORT]:PRIVATE`` into a `Node` (PUBLIC may be empty: head-only)."""
    user, rest = _user_and_rest(spec)
    if "[" not in rest and rest.count(":") > 2:
        raise BadInput(f"bad node {spec!r}: put an IPv6 address in brackets, e.g. [2001:db8::1]:PRIVATE")
    parts = _split_colons(rest)
    if len(parts) == 1:
        raise BadInput(f"bad node {spec!r}: missing private address (PUBLIC:PRIVATE, or :PRIVATE for a worker "
                       "reached through the head)")
    if len(parts) > 3:
        raise BadInput(f"bad node {spec!r}: expected [USER@]PUBLIC[:PORT]:PRIVATE")
    public = host(parts[0], "public", spec) if parts[0] else ""
    port = _port(parts[1], spec) if len(parts) == 3 else DEFAULT_PORT
    private = address(parts[-1], "private", spec)
    return Node(nid, f"{prefix}{nid}", public, private, port, user, explicit_user=user is not None)


def parse_jump(spec, prefix="rental"):
    """The jump host ``[USER@]HOST[:PORT]`` as a `Node` of its own (alias ``rental-jump``), or None."""
    if spec is None or spec == "":
        return None
    user, rest = _user_and_rest(spec, "jump host")
    parts = _split_colons(rest)
    if len(parts) > 2 or not parts[0]:
        raise BadInput(f"bad jump host {spec!r}: expected [USER@]HOST[:PORT] (an IPv6 address in brackets)")
    public = host(parts[0], "jump", spec)
    port = _port(parts[1], spec) if len(parts) == 2 else DEFAULT_PORT
    return Node(-1, f"{prefix}-jump", public, "", port, user, explicit_user=user is not None)


def parse_hosts(hosts, prefix="rental", stdin=None):
    """Validate a whole ``-H`` value into nodes; the first is the head."""
    specs = host_specs(hosts, stdin)
    if not specs or specs == [""]:
        raise BadInput("no nodes given: expected -H PUBLIC:PRIVATE[,PUBLIC:PRIVATE...]")
    nodes = [parse_node(spec, i, prefix) for i, spec in enumerate(specs)]
    check_cluster(nodes, lambda node: f"bad node {specs[node.nid]!r}")
    return nodes


def check_cluster(nodes, name):
    """What no cluster may be: a head without a public address, two nodes at one address."""
    if nodes[0].head_only:
        raise BadInput(f"{name(nodes[0])}: the head (the first node) needs a public address; :PRIVATE is a "
                       "worker the head reaches")
    for attr, what in (("private", "private address"), ("address", "public address")):
        seen = {}
        for node in nodes:
            key = getattr(node, attr)
            if key in seen:
                shown = node.host if attr == "address" else node.private
                raise BadInput(f"duplicate {what if node.public or attr == 'private' else 'address'} {shown!r} "
                               f"({seen[key]} and {node.alias})")
            seen[key] = node.alias


def state_path(config_value=None):
    """Where the cluster is remembered (``multinode.state`` or the XDG default)."""
    if config_value:
        return Path(config_value).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "multinode" / "cluster.json"


NODE_FIELDS = {"nid", "alias", "public", "private", "port", "user", "explicit_user"}
MAX_NID = 99_999


def node_from_state(data, index):
    """One remembered node, checked field by field as ``-H`` checks a node (the file may be
    damaged or edited by anyone who can write it): a value that is not what it must be
    never reaches an ssh option, a shell word or a file. The alias is derived, not read."""
    if not isinstance(data, dict) or set(data) - NODE_FIELDS or not {"nid", "public", "private"} <= set(data):
        raise ValueError(f"node #{index} must have nid, public, private (and port, user, explicit_user) only")
    nid, port = data["nid"], data.get("port", DEFAULT_PORT)
    if isinstance(nid, bool) or not isinstance(nid, int) or not 0 <= nid <= MAX_NID:
        raise ValueError(f"node #{index}: nid {nid!r} is not a whole number from 0 to {MAX_NID}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise ValueError(f"node #{index}: port {port!r} is not a whole number")
    user = data.get("user")
    if user is not None and not (isinstance(user, str) and USER_RE.fullmatch(user)):
        raise ValueError(f"node #{index}: user {user!r} is not a login name")
    explicit = data.get("explicit_user", False)
    if not isinstance(explicit, bool):
        raise ValueError(f"node #{index}: explicit_user {explicit!r} is not true or false")
    public, private = data["public"], data["private"]
    if not isinstance(public, str) or not isinstance(private, str):
        raise ValueError(f"node #{index}: addresses must be text")
    again = parse_node(f"{user + '@' if user else ''}{bracketed(public)}:{port}:{private}", nid)
    if (again.public, again.private, again.port) != (public, private, port):
        raise ValueError(f"node #{index} is not in canonical form")
    again.explicit_user = explicit
    again.user = user
    return again


def load_cluster(path, notes=False):
    """The remembered nodes and jump host ((None, None) when there is no remembered cluster),
    every field checked as ``-H`` and ``--jump`` check theirs. ``notes``: also what it notes
    besides (see `membership`), checked as the nodes are: the nids of the nodes that failed in
    the last run, and the machines leaving it, not yet wiped (each [] when none)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return (None, None, [], []) if notes else (None, None)
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read the remembered cluster {str(path)!r}: {exc}") from None
    try:
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not data["nodes"] \
                or set(data) - {"nodes", "jump", "failed", "leaving"}:
            raise ValueError("expected {\"nodes\": [...]} with at least one node (and \"jump\", \"failed\", "
                             "\"leaving\")")
        nodes = [node_from_state(node, i) for i, node in enumerate(data["nodes"])]
        nids = [n.nid for n in nodes]
        if len(set(nids)) != len(nids):
            raise ValueError("two nodes have the same nid")
        check_cluster(nodes, lambda node: f"node #{nodes.index(node)}")
        jump = data.get("jump")
        if jump is not None and not isinstance(jump, str):
            raise ValueError(f"jump {jump!r} is not text")
        jump = parse_jump(jump)
        if jump is not None and jump.spec != data["jump"]:
            raise ValueError(f"jump {data['jump']!r} is not in canonical form")
        if not notes:
            return nodes, jump
        failed, leaving = data.get("failed", []), data.get("leaving", [])
        if not isinstance(failed, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in failed):
            raise ValueError(f"failed {failed!r} is not a list of node numbers")
        if not isinstance(leaving, list):
            raise ValueError(f"leaving {leaving!r} is not a list of nodes")
        return nodes, jump, failed, [node_from_state(node, i) for i, node in enumerate(leaving)]
    except BadInput as exc:
        raise BadInput(f"cannot read the remembered cluster {str(path)!r}: {exc} (pass -H to give the cluster again)") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise BadInput(f"cannot read the remembered cluster {str(path)!r}: {reason} (pass -H to give the cluster again)") from None


def load_state(path):
    """The remembered nodes, or None when there is no remembered cluster."""
    return load_cluster(path)[0]


def save_state(path, nodes, jump=None, failed=(), leaving=()):
    """Remember ``nodes`` (and the ``jump`` host in front of them, the nids of those that
    ``failed``, the machines ``leaving``); what a run resolved is not kept."""
    fields = lambda n: {k: v for k, v in asdict(n).items() if k in NODE_FIELDS}  # noqa: E731
    data = {"nodes": [fields(n) for n in nodes]}
    if jump is not None:
        data["jump"] = jump.spec
    if failed:
        data["failed"] = sorted(set(failed))
    if leaving:
        data["leaving"] = [fields(n) for n in leaving]
    return write_atomic(path, json.dumps(data, indent=2) + "\n", mode=0o600, backup=False)


def adopt_known_users(nodes, remembered):
    """Keep users detected earlier for machines that are still the same."""
    by_address = {n.address: n for n in remembered or []}
    for node in nodes:
        old = by_address.get(node.address)
        if node.user is None and old is not None and old.same_machine(node):
            node.user = old.user
    return nodes
