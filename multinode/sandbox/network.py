"""The sandbox's network: namespaces, the switch's two bridges, veths plugged into them.

Each node has a public address (``eth0``, on the public bridge) and a private
one (``ens7``, on the private bridge). The bridges live in a switch namespace,
so nothing touches the host's network; a blackhole route keeps stray traffic
to the sandbox range on the host. Addresses come from 198.18.0.0/15 only
(reserved for benchmarking).
"""

from .proc import kill, sh

SANDBOX_RANGE = "198.18.0.0/15"
PUBLIC_NET, PRIVATE_NET = "198.18.0", "198.19.0"
LAPTOP_IP = f"{PUBLIC_NET}.1"
PUBLIC_IF, PRIVATE_IF = "eth0", "ens7"
BRIDGES = ("br-pub", "br-priv")


def namespaces():
    return [line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line.strip()]


def netns(ns):
    sh("ip", "netns", "add", ns)
    sh("ip", "-n", ns, "link", "set", "lo", "up")


def plug(switch, ns, ifname, bridge, port, address):
    """A veth from namespace ``ns`` (``ifname``, ``address``) to ``bridge`` in ``switch``."""
    sh("ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", switch)
    sh("ip", "-n", switch, "link", "set", port, "master", bridge, "up")
    sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", ifname)
    sh("ip", "-n", ns, "link", "set", ifname, "up")


def build_switch(switch):
    """The blackhole route for the sandbox range, and the switch namespace with its bridges."""
    sh("ip", "route", "replace", "blackhole", SANDBOX_RANGE)
    netns(switch)
    for bridge in BRIDGES:
        sh("ip", "-n", switch, "link", "add", bridge, "type", "bridge")
        sh("ip", "-n", switch, "link", "set", bridge, "up")


def plug_node(switch, ns, nid):
    """Node ``nid``'s namespace ``ns``, on both bridges; return its public and private addresses."""
    netns(ns)
    public, private = f"{PUBLIC_NET}.{10 + nid}", f"{PRIVATE_NET}.{10 + nid}"
    plug(switch, ns, PUBLIC_IF, "br-pub", f"p{nid}", public)
    plug(switch, ns, PRIVATE_IF, "br-priv", f"q{nid}", private)
    return public, private


def cut(ns, address, cut=True):
    """Give namespace ``ns`` an unreachable route to ``address`` (or, with ``cut=False``, take it away)."""
    sh("ip", "-n", ns, "route", "add" if cut else "del", "unreachable", f"{address}/32", check=cut)


def sandbox_namespaces(name):
    """Every namespace of sandbox ``name``: its nodes, switch, laptop and forge."""
    return [ns for ns in namespaces() if ns.startswith(f"{name}-")]


def kill_inside(names):
    """Kill every process in these namespaces."""
    for ns in names:
        for pid in sh("ip", "netns", "pids", ns, check=False).stdout.split():
            kill(int(pid))


def delete(names):
    for ns in names:
        sh("ip", "netns", "del", ns, check=False)


def drop_blackhole():
    """Remove the blackhole route once no sandbox's switch is left."""
    if not [ns for ns in namespaces() if ns.endswith("-sw")]:
        sh("ip", "route", "del", "blackhole", SANDBOX_RANGE, check=False)
