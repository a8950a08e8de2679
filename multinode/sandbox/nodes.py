"""A sandbox node's processes: its boot, its sshd, its fake GPUs, commands run in it, its CPU time.

A node boots in its network namespace inside ``unshare`` (PID, mount and UTS
namespaces), chrooted in its own root, under a PID 1 that reaps orphans; its
real ``sshd`` listens on ports 22 and 2222. Every process of a node runs in
the node's CPU accounting cgroup (v1 cpuacct, or v2).
"""

import os
import signal
import subprocess
import time
from pathlib import Path

from .proc import alive, children, kill, sh

SSH_PORTS = (22, 2222)  # 2222: a provider's non-standard port (USER@PUBLIC:PORT:PRIVATE)
# CPU accounting per node (cgroup v1 cpuacct, or v2): every process of a node is counted.
CGROUP_ROOTS = (Path("/sys/fs/cgroup/cpuacct"), Path("/sys/fs/cgroup"))
PIDS = ("sshd_pid", "nsenter_pid", "unshare_pid", "init_pid")

# PID 1 of a node: reaps orphans (daemons, tmux servers) until killed.
INIT = (
    "import os, time\n"
    "while True:\n"
    "    try:\n"
    "        while os.waitpid(-1, os.WNOHANG)[0]: pass\n"
    "    except ChildProcessError: pass\n"
    "    time.sleep(0.5)\n"
)


def same_file(a, b):
    """Whether paths ``a`` and ``b`` are one directory (by device and inode: a process's root, seen
    from another mount namespace, reads as a path of the host's, never as ``b``'s own spelling)."""
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


# -- CPU accounting ----------------------------------------------------------

def cgroup(name, nid):
    """Node ``nid`` of sandbox ``name``'s CPU cgroup (None without cgroups)."""
    for root in CGROUP_ROOTS:
        if (root / "cpuacct.usage").exists() or (root / "cgroup.controllers").exists():
            return root / f"multinode-{name}" / f"n{nid}"
    return None


def accounted(group, argv):
    """``argv``, run inside CPU cgroup ``group`` (joined before exec: children follow)."""
    try:
        group.mkdir(parents=True, exist_ok=True)
    except (AttributeError, OSError):
        return argv
    return ["sh", "-c", '{ echo $$ >"$0"; } 2>/dev/null; exec "$@"', str(group / "cgroup.procs"), *argv]


def remove_cgroups(name):
    group = cgroup(name, 0)
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


def cpu_seconds(group):
    """CPU time the processes of ``group`` have used so far (None without cgroups)."""
    if group is None:
        return None
    try:
        if (group / "cpuacct.usage").exists():
            return int((group / "cpuacct.usage").read_text()) / 1e9
        stat = dict(line.split() for line in (group / "cpu.stat").read_text().splitlines())
        return int(stat["usage_usec"]) / 1e6
    except (AttributeError, OSError, KeyError, ValueError):
        return None


# -- processes ---------------------------------------------------------------
def boot(node, group):
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
        accounted(group, [
            "ip", "netns", "exec", node["ns"], "unshare", "--mount", "--uts", "--pid", "--fork",
            "--kill-child", "--propagation", "private", "sh", "-c", script]),
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
    )
    log.close()
    node["unshare_pid"] = proc.pid
    deadline = time.time() + 20
    while time.time() < deadline:
        for child in children(proc.pid):
            if same_file(f"/proc/{child}/root", root):
                node["init_pid"] = child
                return
        if proc.poll() is not None:
            raise RuntimeError(f"sandbox node {node['nid']} did not start (exit {proc.returncode})")
        time.sleep(0.02)
    raise RuntimeError(f"sandbox node {node['nid']} did not start within 20 s")


def start_sshd(node, group):
    """Start the node's sshd (its last one stopped); return when it listens."""
    nid = node["nid"]
    log = Path(node["dir"]) / "sshd.log"
    with open(log, "a") as fh:
        start = fh.tell()
        proc = subprocess.Popen(
            accounted(group, [
                "nsenter", "-t", str(node["init_pid"]), "-a", "-r", "-w", "/usr/sbin/sshd", "-D", "-e",
                *[arg for port in SSH_PORTS for arg in ("-p", str(port))]]),
            stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, start_new_session=True,
        )
    deadline = time.time() + 20
    while time.time() < deadline:
        with open(log) as fh:
            fh.seek(start)
            if "Server listening on" in fh.read():
                node["sshd_pid"] = (children(proc.pid) or [proc.pid])[0]
                node["nsenter_pid"] = proc.pid
                return
        if proc.poll() is not None:
            raise RuntimeError(f"sshd on sandbox node {nid} exited: see {log}")
        time.sleep(0.02)
    raise RuntimeError(f"sshd on sandbox node {nid} did not listen within 20 s: see {log}")


def stop_sshd(node):
    """Stop the node's sshd listener (sessions and the node live on)."""
    for key in ("sshd_pid", "nsenter_pid"):
        pid = node.pop(key, None)
        if pid and alive(pid):
            kill(pid, signal.SIGTERM)
            for _ in range(100):
                if not alive(pid):
                    break
                time.sleep(0.02)


def in_netns(pid, ns):
    """Whether process ``pid`` lives in network namespace ``ns`` (a PID read from a stale state
    file may belong to another process by now: never kill that one)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{ns}").st_ino
    except (OSError, TypeError):
        return False


def kill_all(node):
    """Kill the node's sshd and its PID 1 (and so everything in its PID namespace)."""
    for key in PIDS:
        if in_netns(node.get(key), node["ns"]):
            kill(node.get(key))


def sshd_log(node):
    return (Path(node["dir"]) / "sshd.log").read_text()


def run(node, *cmd, check=True, user=None):
    """Run a command inside the node (as root, or ``user``)."""
    prefix = ["nsenter", "-t", str(node["init_pid"]), "-a", "-r", "-w"]
    if user:
        prefix += ["runuser", "-u", user, "--"]
    return sh(*prefix, *cmd, check=check)


# What the fake GPUs are doing, made up (GPU i takes row i % 8): utilization %, MiB less than all
# used, temperature °C, power W. GPU 3 idles: status shows it as the one that stands out.
FAKE_LOAD = ((97, 10325, 71, 690.5), (95, 10425, 73, 688.2), (99, 10125, 74, 695.0), (12, 60000, 52, 140.3),
             (96, 10325, 70, 684.9), (98, 10225, 72, 691.7), (94, 10525, 69, 679.4), (97, 10325, 71, 690.1))


def fake_gpus(node, count, model, memory, driver, cuda, ecc):
    """Give the node a fake ``nvidia-smi`` answering verify's queries with ``count`` GPUs of
    ``model`` (no GPU exists here), and status's with made-up utilization, memory used,
    temperature and power (`FAKE_LOAD`); ``count`` 0 takes it away."""
    path = Path(node["root"]) / "usr/local/bin/nvidia-smi"
    if not count:
        path.unlink(missing_ok=True)
        return
    rows = "".join(f"{model}, {memory}, {driver}, {ecc if i == 0 else 0}\\n" for i in range(count))
    listed = "".join(f"GPU {i}: {model} (UUID: GPU-sandbox-{i})\\n" for i in range(count))
    now = "".join(f"{i}, {u}, {memory - free}, {memory}, {t}, {w:.2f}\\n"
                  for i, (u, free, t, w) in ((i, FAKE_LOAD[i % 8]) for i in range(count)))
    path.write_text(
        "#!/bin/bash\n# sandbox: a fake nvidia-smi (multinode's tests)\n"
        'case "$*" in\n'
        f'  *--query-gpu=index,utilization.gpu,*) printf "{now}" ;;\n'
        f'  *--query-gpu=*) printf "{rows}" ;;\n'
        f'  -L) printf "{listed}" ;;\n'
        f'  "") printf "| NVIDIA-SMI {driver}   Driver Version: {driver}   CUDA Version: {cuda}     |\\n" ;;\n'
        '  *) echo "fake nvidia-smi: unsupported query: $*" >&2; exit 2 ;;\n'
        "esac\n")
    path.chmod(0o755)
