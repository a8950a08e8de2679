"""sandbox.*: a cluster of simulated rental nodes on this machine (root only).

``fab sandbox.up --users ubuntu,user,ubuntu`` starts three nodes; run
multinode against them from the laptop namespace it prints; ``fab
sandbox.down`` removes everything.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from ..config import split_users
from ..inventory import BadInput
from . import image
from .cluster import MAX_NODES, Sandbox, all_sandboxes
from .forge import FORGE_IP
from .laptop import laptop_dir, laptop_home, shell_argv

__all__ = ["Sandbox", "image", "ns"]


def _need_root():
    if os.geteuid() != 0:
        raise Exit("multinode: the sandbox needs root (network namespaces, mounts)", code=2)


def _need_tools():
    """What the sandbox runs on: one line naming what is missing and how to get it."""
    missing = [tool for tool in ("ip", "unshare", "nsenter", "chroot", "mount", "ssh-keygen", "git", "tmux")
               if not shutil.which(tool)]
    if not (image.image_path() / ".complete").exists() and not shutil.which("debootstrap"):
        missing.append("debootstrap")
    if missing:
        raise Exit(f"multinode: the sandbox needs {', '.join(missing)}: apt-get install -y debootstrap iproute2 "
                   "util-linux openssh-client git tmux (Debian/Ubuntu), or run ./demo, which installs them", code=2)
    probe = subprocess.run(["ip", "netns", "add", "mnprobe"], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", "mnprobe"], capture_output=True)
    if probe.returncode:
        reason = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise Exit(f"multinode: the sandbox needs network namespaces, and `ip netns add` failed here ({reason}): "
                   "run it as root on a Linux machine or VM (not in an unprivileged container)", code=2)


@task(help={
    "nodes": "how many nodes (default: one per --users entry, else 3)",
    "users": "login user of each node, comma-separated, e.g. ubuntu,user,ubuntu (default: ubuntu)",
    "key": "public key authorized on the nodes (default: the sandbox laptop's own key, made for it)",
    "name": "sandbox name, up to 8 letters and digits (default: mnsb)",
    "containers": "node numbers that are root-only containers, as on RunPod/Vast.ai (login root, no sudo, "
                  "no Docker), e.g. 2 or 1,2",
    "gpus": "give every node a fake nvidia-smi reporting this many GPUs (default: none)",
})
def up(c, nodes=None, users=None, key=None, name="mnsb", containers=None, gpus=None):
    """Start simulated rental nodes on this machine, to try multinode on."""
    _need_root()
    try:
        names = split_users(users, "users (--users)") if users else ["ubuntu"]
        count = int(nodes) if nodes is not None else (len(names) if users else 3)
        if not 1 <= count <= MAX_NODES:
            raise BadInput(f"bad --nodes {nodes!r}: 1 to {MAX_NODES}")
        if len(names) == 1:
            names = names * count
        if len(names) != count:
            raise BadInput(f"bad --users {users!r}: {len(names)} users for {count} nodes")
        key_path = Path(key).expanduser() if key else None
        if key_path is not None and not key_path.is_file():
            raise BadInput(f"public key {str(key_path)!r} not found (ssh-keygen -t ed25519 makes one)")
        chosen = set()
        for part in (containers or "").split(","):
            if part.strip():
                if not part.strip().isdigit() or int(part) >= count:
                    raise BadInput(f"bad --containers {containers!r}: node numbers 0 to {count - 1}")
                chosen.add(int(part))
        names = ["root" if i in chosen else u for i, u in enumerate(names)]
        sandbox = Sandbox(name)
    except (BadInput, ValueError) as exc:
        raise Exit(f"multinode: {exc}", code=2) from None
    _need_tools()
    shutil.rmtree(laptop_dir(sandbox), ignore_errors=True)  # a new sandbox: a new laptop (no stale keys)
    home = laptop_home(sandbox)
    pubkey = key_path.read_text() if key_path else (home / ".ssh/id_ed25519.pub").read_text()
    try:
        sandbox.up(names, pubkey, containers=chosen)
        Path(home / ".fabric.yaml").write_text(sandbox.forge.config_file.read_text())
        for nid in range(len(sandbox.nodes)) if gpus else ():
            sandbox.fake_gpus(nid, int(gpus))
    except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
        sandbox.down()
        detail = getattr(exc, "stderr", None) or str(exc)
        raise Exit(f"multinode: the sandbox did not come up: {' '.join(str(detail).split())[-300:]}", code=2) from None
    print(f"sandbox {name}: {count} node(s) up")
    for n in sandbox.nodes:
        print(f"  node{n['nid']}  public {n['public']:<13} private {n['private']:<13} user {n['user']}"
              + ("  (root-only container: no sudo, no Docker)" if n.get("container") else ""))
    print(f"  forge   {FORGE_IP}  git://{FORGE_IP}/workspace.git, dotfiles.git; http://{FORGE_IP}:8080/")
    print(f"Its laptop: `fab sandbox.shell{'' if name == 'mnsb' else f' --name {name}'}` opens a shell there "
          "(its own home, keys and settings), where multinode runs with no extra flags:")
    print(f"  fab -H {sandbox.hosts} setup")
    print(f"Remove it with: fab sandbox.down --name {name}")


@task(help={"name": "sandbox name (default: mnsb)",
            "command": "run this command there instead of an interactive shell, e.g. \"fab verify\""})
def shell(c, name="mnsb", command=None):
    """Open a shell (or run a command) on the sandbox's laptop, where fab needs no extra flags."""
    _need_root()
    sandbox = Sandbox(name)
    if not sandbox.nodes:
        raise Exit(f"multinode: sandbox {name} is not up: run fab sandbox.up{'' if name == 'mnsb' else f' --name {name}'}",
                   code=2)
    proc = subprocess.run(shell_argv(sandbox, command), cwd=Path(__file__).resolve().parents[2])
    if proc.returncode:
        raise Exit(code=proc.returncode)


@task(help={"name": "sandbox name (default: every sandbox on this machine)"})
def down(c, name=None):
    """Stop and remove the sandbox nodes, namespaces and files."""
    _need_root()
    for each in [name] if name else all_sandboxes() or ["mnsb"]:
        sandbox = Sandbox(each)
        sandbox.down()
        shutil.rmtree(laptop_dir(sandbox), ignore_errors=True)
        print(f"sandbox {each}: down")


@task(help={"name": "sandbox name (default: mnsb)"})
def status(c, name="mnsb"):
    """Show the sandbox nodes and whether their sshd runs."""
    sandbox = Sandbox(name)
    if not sandbox.nodes:
        print(f"sandbox {name}: not up")
        return
    for n in sandbox.nodes:
        state = "sshd running" if n.get("sshd_pid") and Path(f"/proc/{n['sshd_pid']}").exists() else "sshd stopped"
        print(f"node{n['nid']}  {n['public']}:{n['private']}  user {n['user']}  {state}")


@task(name="image")
def build_image(c):
    """Build (once) the cached Debian image the sandbox nodes start from."""
    _need_root()
    print(image.build(lambda msg: print(msg, file=sys.stderr)))


ns = Collection("sandbox")
for t in (up, shell, down, status, build_image):
    ns.add_task(t)
