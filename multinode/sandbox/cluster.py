"""Simulated rental nodes on one machine, for trying and testing multinode.

Each node is a network namespace with a public address (``eth0``, on the
public bridge) and a private one (``ens7``, on the private bridge), its own
root filesystem (an overlay on the cached image), its own PID/mount/UTS
namespaces and its own real ``sshd``. The laptop is a namespace on the public
bridge only: like a real laptop it cannot reach the private addresses. The
bridges live in a switch namespace, so nothing touches the host's network;
a blackhole route keeps stray traffic to the sandbox range on the host.
Addresses come from 198.18.0.0/15 only (reserved for benchmarking).
"""

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import image

SANDBOX_RANGE = "198.18.0.0/15"
PUBLIC_NET, PRIVATE_NET = "198.18.0", "198.19.0"
LAPTOP_IP = f"{PUBLIC_NET}.1"
PUBLIC_IF, PRIVATE_IF = "eth0", "ens7"
MAX_NODES = 200
SSH_PORTS = (22, 2222)  # 2222: a provider's non-standard port (USER@PUBLIC:PORT:PRIVATE)
STATE_ROOT = Path(os.environ.get("MULTINODE_SANDBOX_STATE", "/var/lib/multinode-sandbox"))
# CPU accounting per node (cgroup v1 cpuacct, or v2): every process of a node is counted.
CGROUP_ROOTS = (Path("/sys/fs/cgroup/cpuacct"), Path("/sys/fs/cgroup"))

# PID 1 of a node: reaps orphans (daemons, tmux servers) until killed.
INIT = (
    "import os, time\n"
    "while True:\n"
    "    try:\n"
    "        while os.waitpid(-1, os.WNOHANG)[0]: pass\n"
    "    except ChildProcessError: pass\n"
    "    time.sleep(0.5)\n"
)


def sh(*args, check=True, **kw):
    return subprocess.run([str(a) for a in args], check=check, capture_output=True, text=True, **kw)


def _children(pid):
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _alive(pid):
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, TypeError):
        return False
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone meanwhile
        return False


def _namespaces():
    return [line.split()[0] for line in sh("ip", "netns", "list").stdout.splitlines() if line.strip()]


def _kill(pid, sig=signal.SIGKILL):
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, TypeError):
        pass


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
        for root in CGROUP_ROOTS:
            if (root / "cpuacct.usage").exists() or (root / "cgroup.controllers").exists():
                return root / f"multinode-{self.name}" / f"n{nid}"
        return None

    def _accounted(self, nid, argv):
        """``argv``, run inside node ``nid``'s CPU cgroup (joined before exec: children follow)."""
        group = self._cgroup(nid)
        try:
            group.mkdir(parents=True, exist_ok=True)
        except (AttributeError, OSError):
            return argv
        return ["sh", "-c", '{ echo $$ >"$0"; } 2>/dev/null; exec "$@"', str(group / "cgroup.procs"), *argv]

    def _remove_cgroups(self):
        group = self._cgroup(0)
        if group is None or not group.parent.exists():
            return
        for sub in group.parent.glob("n*"):
            for _ in range(50):  # empty once the killed processes are gone
                try:
                    sub.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)
        try:
            group.parent.rmdir()
        except OSError:
            pass

    def cpu_seconds(self, nid):
        """CPU time node ``nid``'s processes have used so far (None without cgroups)."""
        group = self._cgroup(nid)
        try:
            if (group / "cpuacct.usage").exists():
                return int((group / "cpuacct.usage").read_text()) / 1e9
            stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
            return int(stat["usage_usec"]) / 1e6
        except (AttributeError, OSError, KeyError, ValueError):
            return None

    # -- network -------------------------------------------------------------
    def _netns(self, ns):
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")

    def _plug(self, ns, ifname, bridge, port, address):
        """A veth from namespace ``ns`` (``ifname``, ``address``) to ``bridge``."""
        sh("ip", "-n", ns, "link", "add", ifname, "type", "veth", "peer", "name", port, "netns", self.switch)
        sh("ip", "-n", self.switch, "link", "set", port, "master", bridge, "up")
        sh("ip", "-n", ns, "addr", "add", f"{address}/24", "dev", ifname)
        sh("ip", "-n", ns, "link", "set", ifname, "up")

    def _network(self):
        sh("ip", "route", "replace", "blackhole", SANDBOX_RANGE)
        self._netns(self.switch)
        for bridge in ("br-pub", "br-priv"):
            sh("ip", "-n", self.switch, "link", "add", bridge, "type", "bridge")
            sh("ip", "-n", self.switch, "link", "set", bridge, "up")
        self._netns(self.laptop)
        self._plug(self.laptop, PUBLIC_IF, "br-pub", "laptop", LAPTOP_IP)

    # -- nodes ---------------------------------------------------------------
    def _prepare(self, nid, user, base, pubkey, container=False):
        """Node ``nid``'s root, user and network. A ``container`` is what RunPod and
        Vast.ai rent: login root, no sudo, no Docker, no systemd."""
        ns = f"{self.name}-n{nid}"
        d = self.dir / f"n{nid}"
        root = d / "root"
        for sub in ("upper", "work", "root"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir={base},upperdir={d / 'upper'},workdir={d / 'work'}", root)
        hostname = f"node{nid}"
        (root / "etc/hostname").write_text(hostname + "\n")
        (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n")
        if container:
            user = "root"
            for tool in ("usr/bin/sudo", "usr/bin/docker", "usr/sbin/dockerd", "usr/bin/dockerd"):
                (root / tool).unlink(missing_ok=True)
            (root / ".dockerenv").write_text("")
            home = "/root"
        else:
            sh("chroot", root, "useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", user)
            sudoers = root / "etc/sudoers.d" / f"90-{user}"
            sudoers.write_text(f"{user} ALL=(ALL) NOPASSWD:ALL\n")
            sudoers.chmod(0o440)
            home = f"/home/{user}"
        sh("chroot", root, "install", "-d", "-m", "700", "-o", user, "-g", user, f"{home}/.ssh")
        keys = root / home.lstrip("/") / ".ssh/authorized_keys"
        keys.write_text(pubkey)
        sh("chroot", root, "chown", f"{user}:{user}", f"{home}/.ssh/authorized_keys")
        keys.chmod(0o600)
        sh("chroot", root, "ssh-keygen", "-A")
        self._netns(ns)
        public, private = f"{PUBLIC_NET}.{10 + nid}", f"{PRIVATE_NET}.{10 + nid}"
        self._plug(ns, PUBLIC_IF, "br-pub", f"p{nid}", public)
        self._plug(ns, PRIVATE_IF, "br-priv", f"q{nid}", private)
        return {"nid": nid, "ns": ns, "hostname": hostname, "user": user, "public": public,
                "private": private, "root": str(root), "dir": str(d), "container": container, "home": home}

    def _boot(self, node):
        """Start the node's namespaces with a reaping PID 1, chrooted in its root."""
        root = node["root"]
        script = (
            f"set -e; hostname {node['hostname']}; "
            f"mount -t proc proc {root}/proc; mount -t sysfs sysfs {root}/sys; "
            f"mount --rbind /dev {root}/dev; mount -t tmpfs -o mode=1777 shm {root}/dev/shm; "
            f"mount -t tmpfs -o mode=755 run {root}/run; mkdir -p {root}/run/sshd; "
            f"exec chroot {root} /usr/bin/python3 -c '{INIT}'"
        )
        log = open(Path(node["dir"]) / "init.log", "a")
        proc = subprocess.Popen(
            self._accounted(node["nid"], [
                "ip", "netns", "exec", node["ns"], "unshare", "--mount", "--uts", "--pid", "--fork",
                "--kill-child", "--propagation", "private", "sh", "-c", script]),
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
        )
        log.close()
        node["unshare_pid"] = proc.pid
        deadline = time.time() + 20
        while time.time() < deadline:
            for child in _children(proc.pid):
                if os.path.realpath(f"/proc/{child}/root") == os.path.realpath(root):
                    node["init_pid"] = child
                    return
            if proc.poll() is not None:
                raise RuntimeError(f"sandbox node {node['nid']} did not start (exit {proc.returncode})")
            time.sleep(0.02)
        raise RuntimeError(f"sandbox node {node['nid']} did not start within 20 s")

    def start_sshd(self, nid):
        """Start (or restart) node ``nid``'s sshd; return when it listens."""
        node = self.nodes[nid]
        self.stop_sshd(nid)
        log = Path(node["dir"]) / "sshd.log"
        with open(log, "a") as fh:
            start = fh.tell()
            proc = subprocess.Popen(
                self._accounted(nid, [
                    "nsenter", "-t", str(node["init_pid"]), "-a", "-r", "-w", "/usr/sbin/sshd", "-D", "-e",
                    *[arg for port in SSH_PORTS for arg in ("-p", str(port))]]),
                stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, start_new_session=True,
            )
        deadline = time.time() + 20
        while time.time() < deadline:
            with open(log) as fh:
                fh.seek(start)
                if "Server listening on" in fh.read():
                    node["sshd_pid"] = (_children(proc.pid) or [proc.pid])[0]
                    node["nsenter_pid"] = proc.pid
                    self._save()
                    return
            if proc.poll() is not None:
                raise RuntimeError(f"sshd on sandbox node {nid} exited: see {log}")
            time.sleep(0.02)
        raise RuntimeError(f"sshd on sandbox node {nid} did not listen within 20 s: see {log}")

    def stop_sshd(self, nid):
        """Stop node ``nid``'s sshd listener (sessions and the node live on)."""
        node = self.nodes[nid]
        for key in ("sshd_pid", "nsenter_pid"):
            pid = node.pop(key, None)
            if pid and _alive(pid):
                _kill(pid, signal.SIGTERM)
                for _ in range(100):
                    if not _alive(pid):
                        break
                    time.sleep(0.02)
        self._save()

    def rekey(self, nid):
        """Give node ``nid`` new host keys, as a reinstalled machine has."""
        root = Path(self.nodes[nid]["root"])
        for key in (root / "etc/ssh").glob("ssh_host_*"):
            key.unlink()
        sh("chroot", root, "ssh-keygen", "-A")
        self.start_sshd(nid)

    def fake_gpus(self, nid, count=8, model="NVIDIA H100 80GB HBM3", memory=81559, driver="550.54.15", cuda="12.4",
                  ecc=0):
        """Give node ``nid`` a fake ``nvidia-smi`` answering verify's queries (no GPU exists here);
        ``count`` 0 takes it away."""
        path = Path(self.nodes[nid]["root"]) / "usr/local/bin/nvidia-smi"
        if not count:
            path.unlink(missing_ok=True)
            return
        rows = "".join(f"{model}, {memory}, {driver}, {ecc if i == 0 else 0}\\n" for i in range(count))
        listed = "".join(f"GPU {i}: {model} (UUID: GPU-sandbox-{i})\\n" for i in range(count))
        path.write_text(
            "#!/bin/bash\n# sandbox: a fake nvidia-smi (multinode's tests)\n"
            'case "$*" in\n'
            f'  *--query-gpu=*) printf "{rows}" ;;\n'
            f'  -L) printf "{listed}" ;;\n'
            f'  "") printf "| NVIDIA-SMI {driver}   Driver Version: {driver}   CUDA Version: {cuda}     |\\n" ;;\n'
            '  *) echo "fake nvidia-smi: unsupported query: $*" >&2; exit 2 ;;\n'
            "esac\n")
        path.chmod(0o755)

    def cut(self, a, b, cut=True):
        """Cut (or, with ``cut=False``, mend) the private link between nodes ``a`` and ``b``:
        node ``b`` gets no route back to ``a``, so neither reaches the other."""
        action = "add" if cut else "del"
        sh("ip", "-n", self.nodes[b]["ns"], "route", action, "unreachable", f"{self.nodes[a]['private']}/32",
           check=cut)

    def sshd_log(self, nid):
        return (Path(self.nodes[nid]["dir"]) / "sshd.log").read_text()

    def exec(self, nid, *cmd, check=True, user=None):
        """Run a command inside node ``nid`` (as root, or ``user``)."""
        node = self.nodes[nid]
        prefix = ["nsenter", "-t", str(node["init_pid"]), "-a", "-r", "-w"]
        if user:
            prefix += ["runuser", "-u", user, "--"]
        return sh(*prefix, *cmd, check=check)

    def laptop_cmd(self, *cmd, env=None):
        """argv that runs ``cmd`` on the laptop (its namespace), with ``env``."""
        env_args = [f"{k}={v}" for k, v in (env or {}).items()]
        return ["ip", "netns", "exec", self.laptop, "env", *env_args, *cmd]

    # -- whole cluster -------------------------------------------------------
    def up(self, users, pubkey, log=print, forge=True, containers=()):
        """Bring up ``len(users)`` nodes, node i logging in as ``users[i]``, and the forge.

        The nodes numbered in ``containers`` are root-only containers (their user is root)."""
        if not 1 <= len(users) <= MAX_NODES:
            raise ValueError(f"bad node count {len(users)}: 1 to {MAX_NODES}")
        self.down()
        base = image.build(log)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._network()
        with ThreadPoolExecutor(max_workers=8) as pool:
            self.nodes = list(pool.map(lambda a: self._prepare(a[0], a[1], base, pubkey, a[0] in containers),
                                       enumerate(users)))
        self._save()
        for node in self.nodes:
            self._boot(node)
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
            for key in ("sshd_pid", "nsenter_pid", "unshare_pid", "init_pid"):
                _kill(node.get(key))
        namespaces = [ns for ns in _namespaces() if ns.startswith(f"{self.name}-")]
        for ns in namespaces:
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                _kill(int(pid))
        for node_dir in sorted(self.dir.glob("n*")):
            root = node_dir / "root"
            if os.path.ismount(root):
                if sh("umount", root, check=False).returncode:
                    time.sleep(0.2)
                    sh("umount", "-l", root, check=False)
        for ns in namespaces:
            sh("ip", "netns", "del", ns, check=False)
        self._remove_cgroups()
        shutil.rmtree(self.dir, ignore_errors=True)
        self.nodes = []
        if not [ns for ns in _namespaces() if ns.endswith("-sw")]:
            sh("ip", "route", "del", "blackhole", SANDBOX_RANGE, check=False)


def all_sandboxes():
    return sorted(p.name for p in STATE_ROOT.iterdir() if p.name.isalnum()) if STATE_ROOT.exists() else []
