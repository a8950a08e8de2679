"""Simulated rental nodes on one machine, for trying and testing multinode.

Each node is a network namespace with a public address (``eth0``, on the
public bridge) and a private one (``ens7``, on the private bridge), its own
root filesystem (an overlay on the cached image), its own PID/mount/UTS
namespaces and its own real ``sshd``. The laptop is a namespace on the public
bridge only: like a real laptop it cannot reach the private addresses. The
bridges live in a switch namespace, so nothing touches the host's network;
a blackhole route keeps stray traffic to the sandbox range on the host.
Addresses come from 198.18.0.0/15 only (reserved for benchmarking).

The Sandbox composes them: its state, and one module a resource: network.py
(namespaces, bridges, links), rootfs.py (a node's root and login user),
nodes.py (a node's processes and CPU time), laptop.py (the laptop).
"""

import json
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import image, laptop, network, nodes, rootfs

# LAPTOP_IP and SANDBOX_RANGE: the tests and the benchmark name them here.
from .network import LAPTOP_IP, SANDBOX_RANGE  # noqa: F401

MAX_NODES = 200
STATE_ROOT = Path(os.environ.get("MULTINODE_SANDBOX_STATE", "/var/lib/multinode-sandbox"))


class Sandbox:
    def __init__(self, name="mnsb"):
        if not name.isalnum() or len(name) > 8:
            raise ValueError(f"bad sandbox name {name!r}: up to 8 letters and digits")
        self.name = name
        self.dir = STATE_ROOT / name
        self.switch = f"{name}-sw"
        self.laptop = f"{name}-laptop"
        self.nodes = []
        self._lock = threading.Lock()
        self._load()

    # -- state ---------------------------------------------------------------
    def _load(self):
        try:
            self.nodes = json.loads((self.dir / "state.json").read_text())["nodes"]
        except (OSError, ValueError, KeyError):
            self.nodes = []  # down() still finds everything by the namespaces' names

    def _save(self):
        with self._lock:  # sshd starts in parallel threads
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.dir / "state.json.tmp"
            tmp.write_text(json.dumps({"nodes": self.nodes}, indent=2))
            tmp.replace(self.dir / "state.json")

    def node(self, nid):
        return self.nodes[nid]

    @property
    def hosts(self):
        """The ``-H`` value for this sandbox: PUBLIC:PRIVATE,..."""
        return ",".join(f"{n['public']}:{n['private']}" for n in self.nodes)

    # -- CPU accounting ------------------------------------------------------
    def _cgroup(self, nid):
        return nodes.cgroup(self.name, nid)

    def cpu_seconds(self, nid):
        """CPU time node ``nid``'s processes have used so far (None without cgroups)."""
        return nodes.cpu_seconds(self._cgroup(nid))

    # -- network -------------------------------------------------------------
    def _netns(self, ns):
        network.netns(ns)

    def _plug(self, ns, ifname, bridge, port, address):
        """A veth from namespace ``ns`` (``ifname``, ``address``) to ``bridge``."""
        network.plug(self.switch, ns, ifname, bridge, port, address)

    def cut(self, a, b, cut=True):
        """Cut (or, with ``cut=False``, mend) the private link between nodes ``a`` and ``b``:
        node ``b`` gets no route back to ``a``, so neither reaches the other."""
        network.cut(self.nodes[b]["ns"], self.nodes[a]["private"], cut)

    def hide(self, nid, hidden=True):
        """Make node ``nid`` unreachable from the laptop (an unreachable route to its public
        address in the laptop's namespace), as a worker behind NAT or a firewall is: it still
        reaches out (the forge) and its peers, nothing of the laptop's reaches in. ``hidden=False``
        undoes it."""
        network.cut(self.laptop, self.nodes[nid]["public"], hidden)

    def name_hosts(self, names):
        """Names the laptop resolves ({name: address}, e.g. a node's public address), in its own
        hosts file; ``{}``: none again."""
        laptop.name_hosts(self.laptop, names)

    # -- nodes ---------------------------------------------------------------
    def _prepare(self, nid, user, base, pubkey, container=False):
        """Node ``nid``'s root, user and network. A ``container`` is what RunPod and
        Vast.ai rent: login root, no sudo, no Docker, no systemd."""
        ns, d, hostname = f"{self.name}-n{nid}", self.dir / f"n{nid}", f"node{nid}"
        root, user, home = rootfs.make(d, base, hostname, user, pubkey, container)
        public, private = network.plug_node(self.switch, ns, nid)
        return {"nid": nid, "ns": ns, "hostname": hostname, "user": user, "public": public,
                "private": private, "root": str(root), "dir": str(d), "container": container, "home": home}

    def start_sshd(self, nid):
        """Start (or restart) node ``nid``'s sshd; return when it listens."""
        self.stop_sshd(nid)
        nodes.start_sshd(self.nodes[nid], self._cgroup(nid))
        self._save()

    def stop_sshd(self, nid):
        """Stop node ``nid``'s sshd listener (sessions and the node live on)."""
        nodes.stop_sshd(self.nodes[nid])
        self._save()

    def rekey(self, nid):
        """Give node ``nid`` new host keys, as a reinstalled machine has."""
        rootfs.host_keys(self.nodes[nid]["root"])
        self.start_sshd(nid)

    def fake_gpus(self, nid, count=8, model="NVIDIA H100 80GB HBM3", memory=81559, driver="550.54.15", cuda="12.4",
                  ecc=0):
        """Give node ``nid`` a fake ``nvidia-smi`` answering verify's queries (no GPU exists here);
        ``count`` 0 takes it away."""
        nodes.fake_gpus(self.nodes[nid], count, model, memory, driver, cuda, ecc)

    def sshd_log(self, nid):
        return nodes.sshd_log(self.nodes[nid])

    def exec(self, nid, *cmd, check=True, user=None):
        """Run a command inside node ``nid`` (as root, or ``user``)."""
        return nodes.run(self.nodes[nid], *cmd, check=check, user=user)

    def laptop_cmd(self, *cmd, env=None):
        """argv that runs ``cmd`` on the laptop (its namespace), with ``env``."""
        return laptop.cmd(self.laptop, *cmd, env=env)

    # -- whole cluster -------------------------------------------------------
    def up(self, users, pubkey, log=print, forge=True, containers=()):
        """Bring up ``len(users)`` nodes, node i logging in as ``users[i]``, and the forge.

        The nodes numbered in ``containers`` are root-only containers (their user is root)."""
        if not 1 <= len(users) <= MAX_NODES:
            raise ValueError(f"bad node count {len(users)}: 1 to {MAX_NODES}")
        self.down()
        base = image.build(log)
        self.dir.mkdir(parents=True, exist_ok=True)
        network.build_switch(self.switch)
        laptop.connect(self.switch, self.laptop)
        with ThreadPoolExecutor(max_workers=8) as pool:
            self.nodes = list(pool.map(lambda a: self._prepare(a[0], a[1], base, pubkey, a[0] in containers),
                                       enumerate(users)))
        self._save()
        for node in self.nodes:
            nodes.boot(node, self._cgroup(node["nid"]))
        self._save()
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(self.start_sshd, range(len(self.nodes))))
        if forge:
            self.forge.up(log)
        return self

    @property
    def forge(self):
        from .forge import Forge

        return Forge(self)

    def down(self):
        """Stop and remove everything of this sandbox; safe to call twice."""
        for node in self.nodes:
            nodes.kill_all(node)
        namespaces = network.sandbox_namespaces(self.name)
        network.kill_inside(namespaces)
        for node_dir in sorted(self.dir.glob("n*")):
            rootfs.unmount(node_dir / "root")
        network.delete(namespaces)
        laptop.name_hosts(self.laptop, {})
        nodes.remove_cgroups(self.name)
        shutil.rmtree(self.dir, ignore_errors=True)
        self.nodes = []
        network.drop_blackhole()


def all_sandboxes():
    return sorted(p.name for p in STATE_ROOT.iterdir() if p.name.isalnum()) if STATE_ROOT.exists() else []
