"""The cluster's nodes: parse, validate and remember them.

A node is written ``[USER@]PUBLIC[:PORT]:PRIVATE``; an IPv6 public address
goes in brackets: ``[2001:db8::5]:2222:10.0.0.5`` (private networks: IPv4).
Unspecified, loopback, multicast and broadcast addresses are refused.
``-H`` takes a comma-separated list of nodes, ``@FILE`` for a file, or ``-``
for standard input; a file holds one node per line, either in that form or
as the two columns a provider's page shows (``PUBLIC[:PORT]  PRIVATE``).
Blank lines, ``#`` comments and header lines (no field holding a ``.`` or
``:``, e.g. ``Public IP   Private IP``) are ignored.
The first node is the head. Every error is a `BadInput` naming the value.
"""

import ipaddress
import json
import os
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from invoke.exceptions import Exit

from .localfiles import write_atomic

USER_RE = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
DEFAULT_PORT = 22


class BadInput(ValueError):
    """Input that is refused before anything connects (exit code 2)."""

    def exit(self):
        """The `Exit` that ends the run: one line naming the value, code 2."""
        return Exit(f"multinode: {self}", code=2)


@dataclass
class Node:
    nid: int
    alias: str
    public: str
    private: str
    port: int = DEFAULT_PORT
    user: str | None = None  # the login user, once known
    explicit_user: bool = False  # given as USER@ by the user: never probed

    @property
    def address(self):
        """How ssh names this node in known_hosts: ``addr`` or ``[addr]:port``."""
        return self.public if self.port == DEFAULT_PORT else f"[{self.public}]:{self.port}"

    def same_machine(self, other):
        return (self.public, self.port, self.private) == (other.public, other.port, other.private)


def _ip(value, what, spec):
    if value.startswith("[") and value.endswith("]"):
        value = value[1:-1]
        if ":" not in value:
            raise BadInput(f"bad {what} address {value!r} in {spec!r}: brackets are for IPv6 only")
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        raise BadInput(f"bad {what} address {value!r} in {spec!r}") from None
    kind = ("unspecified" if ip.is_unspecified else "loopback" if ip.is_loopback else "multicast" if ip.is_multicast
            else "link-local" if ip.is_link_local else "broadcast" if ip == ipaddress.ip_address("255.255.255.255")
            else "IPv4-mapped IPv6" if getattr(ip, "ipv4_mapped", None) else None)
    if kind:
        raise BadInput(f"bad {what} address {value!r} in {spec!r}: {kind}, not a machine's")
    if what == "private" and ip.version == 6:
        # The node script finds the NCCL/Gloo interface, /etc/hosts and Ray by IPv4.
        raise BadInput(f"bad private address {value!r} in {spec!r}: IPv6 private networks are not supported; "
                       "give the node's private IPv4 address")
    return str(ip)


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


SAFE_RE = re.compile(r"^[A-Za-z0-9_.:@\[\]-]+$")


def parse_node(spec, nid=0, prefix="rental"):
    """Parse one ``[USER@]PUBLIC[:PORT]:PRIVATE`` into a `Node`."""
    if not spec:
        raise BadInput("empty node in the host list")
    if not SAFE_RE.match(spec):
        bad = "".join(sorted({ch for ch in spec if not SAFE_RE.match(ch)}))
        raise BadInput(f"bad node {spec!r}: character(s) {bad!r} not allowed")
    user = None
    rest = spec
    if "@" in spec:
        user, _, rest = spec.rpartition("@")
        if not USER_RE.fullmatch(user):
            raise BadInput(f"bad user name {user!r} in {spec!r}")
    if "[" not in rest and rest.count(":") > 2:
        raise BadInput(f"bad node {spec!r}: put an IPv6 address in brackets, e.g. [2001:db8::1]:PRIVATE")
    parts = _split_colons(rest)
    if len(parts) == 1:
        raise BadInput(f"bad node {spec!r}: missing private address (PUBLIC:PRIVATE)")
    if len(parts) > 3:
        raise BadInput(f"bad node {spec!r}: expected [USER@]PUBLIC[:PORT]:PRIVATE")
    public = _ip(parts[0], "public", spec)
    port = _port(parts[1], spec) if len(parts) == 3 else DEFAULT_PORT
    private = _ip(parts[-1], "private", spec)
    return Node(nid, f"{prefix}{nid}", public, private, port, user, explicit_user=user is not None)


def _is_header(line):
    return not any("." in field or ":" in field for field in line.split())


def table_specs(text):
    """Node specs from a pasted table or a list file, one node per line.

    Only the first line may be a header: a later line that is not a node is an
    error naming it (dropping it would leave the cluster a node short)."""
    specs, first = [], True
    for number, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if _is_header(line):
            if first:
                first = False
                continue
            raise BadInput(f"bad line {number} {line!r}: not a node (PUBLIC[:PORT] PRIVATE); "
                           "only the first line may be a header")
        first = False
        fields = line.split()
        if len(fields) == 1:
            specs.append(fields[0])
        elif len(fields) == 2:
            user, at, public = fields[0].rpartition("@")
            if public.count(":") > 1 and not public.startswith("["):  # an IPv6 address alone in its column
                public = f"[{public}]"
            specs.append(f"{user}{at}{public}:{fields[1]}")
        else:
            raise BadInput(f"bad line {number} {line!r}: expected PUBLIC[:PORT] PRIVATE")
    return specs


def host_specs(hosts, stdin=None):
    """Node specs from a ``-H`` value: ``a,b,...``, ``@FILE`` or ``-``."""
    if hosts == "-":
        return table_specs((stdin or sys.stdin).read())
    if hosts.startswith("@"):
        path = Path(hosts[1:]).expanduser()
        try:
            return table_specs(path.read_text())
        except OSError as exc:
            raise BadInput(f"cannot read host list {hosts[1:]!r}: {exc.strerror}") from None
    return [s.strip() for s in hosts.split(",")]


def parse_hosts(hosts, prefix="rental", stdin=None):
    """Validate a whole ``-H`` value into nodes; the first is the head."""
    specs = host_specs(hosts, stdin)
    if not specs or specs == [""]:
        raise BadInput("no nodes given: expected -H PUBLIC:PRIVATE[,PUBLIC:PRIVATE...]")
    nodes = [parse_node(spec, i, prefix) for i, spec in enumerate(specs)]
    for attr, what in (("public", "public address"), ("private", "private address")):
        seen = {}
        for node in nodes:
            key = (node.public, node.port) if attr == "public" else node.private
            if key in seen:
                raise BadInput(f"duplicate {what} {getattr(node, attr)!r} ({seen[key]} and {node.alias})")
            seen[key] = node.alias
    return nodes


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
    pub = f"[{public}]" if ":" in public else public
    again = parse_node(f"{user + '@' if user else ''}{pub}:{port}:{private}", nid)
    if (again.public, again.private, again.port) != (public, private, port):
        raise ValueError(f"node #{index} is not in canonical form")
    again.explicit_user = explicit
    again.user = user
    return again


def load_state(path):
    """The remembered nodes, or None when there is no remembered cluster."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise BadInput(f"cannot read the remembered cluster {str(path)!r}: {exc}") from None
    try:
        if not isinstance(data, dict) or not isinstance(data.get("nodes"), list) or not data["nodes"]:
            raise ValueError("expected {\"nodes\": [...]} with at least one node")
        nodes = [node_from_state(node, i) for i, node in enumerate(data["nodes"])]
        nids = [n.nid for n in nodes]
        if len(set(nids)) != len(nids):
            raise ValueError("two nodes have the same nid")
        for attr in ("private", "address"):
            values = [getattr(n, attr) for n in nodes]
            if len(set(values)) != len(values):
                raise ValueError(f"two nodes have the same {attr}")
    except BadInput as exc:
        raise BadInput(f"cannot read the remembered cluster {str(path)!r}: {exc} (pass -H to give the cluster again)") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise BadInput(f"cannot read the remembered cluster {str(path)!r}: {reason} (pass -H to give the cluster again)") from None
    return nodes


def save_state(path, nodes):
    text = json.dumps({"nodes": [asdict(n) for n in nodes]}, indent=2) + "\n"
    return write_atomic(path, text, mode=0o600, backup=False)


def adopt_known_users(nodes, remembered):
    """Keep users detected earlier for machines that are still the same."""
    by_public = {(n.public, n.port): n for n in remembered or []}
    for node in nodes:
        old = by_public.get((node.public, node.port))
        if node.user is None and old is not None and old.same_machine(node):
            node.user = old.user
    return nodes
