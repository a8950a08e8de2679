"""sandbox.*: a cluster of simulated rental nodes on this machine (root only).

``fab sandbox.up --users ubuntu,user,ubuntu`` starts three nodes; run
multinode against them from the laptop namespace it prints; ``fab
sandbox.down`` removes everything.
"""

import os
import sys
from pathlib import Path

from invoke import Collection, task
from invoke.exceptions import Exit

from ..config import split_users
from ..inventory import BadInput
from . import image
from .cluster import MAX_NODES, Sandbox, all_sandboxes
from .forge import FORGE_IP

__all__ = ["Sandbox", "image", "ns"]


def _need_root():
    if os.geteuid() != 0:
        raise Exit("multinode: the sandbox needs root (network namespaces, mounts)", code=2)


@task(help={
    "nodes": "how many nodes (default: one per --users entry, else 3)",
    "users": "login user of each node, comma-separated, e.g. ubuntu,user,ubuntu (default: ubuntu)",
    "key": "public key authorized on the nodes (default: ~/.ssh/id_ed25519.pub)",
    "name": "sandbox name, up to 8 letters and digits (default: mnsb)",
    "containers": "node numbers that are root-only containers, as on RunPod/Vast.ai (login root, no sudo, "
                  "no Docker), e.g. 2 or 1,2",
})
def up(c, nodes=None, users=None, key=None, name="mnsb", containers=None):
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
        key_path = Path(key or "~/.ssh/id_ed25519.pub").expanduser()
        if not key_path.is_file():
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
    sandbox.up(names, key_path.read_text(), containers=chosen)
    print(f"sandbox {name}: {count} node(s) up")
    for n in sandbox.nodes:
        print(f"  node{n['nid']}  public {n['public']:<13} private {n['private']:<13} user {n['user']}"
              + ("  (root-only container: no sudo, no Docker)" if n.get("container") else ""))
    print(f"  forge   {FORGE_IP}  git://{FORGE_IP}/workspace.git, dotfiles.git; http://{FORGE_IP}:8080/")
    print("Run multinode from the laptop namespace (it reaches the public addresses only);")
    print(f"{sandbox.forge.config_file} points bootstrap at the forge instead of the internet:")
    print(f"  ip netns exec {sandbox.laptop} fab -f {sandbox.forge.config_file} -H {sandbox.hosts} "
          "hostkeys detect-user bootstrap")
    print(f"Remove it with: fab sandbox.down --name {name}")


@task(help={"name": "sandbox name (default: every sandbox on this machine)"})
def down(c, name=None):
    """Stop and remove the sandbox nodes, namespaces and files."""
    _need_root()
    for each in [name] if name else all_sandboxes() or ["mnsb"]:
        Sandbox(each).down()
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
for t in (up, down, status, build_image):
    ns.add_task(t)
