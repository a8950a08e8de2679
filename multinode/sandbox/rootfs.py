"""A node's own root filesystem: an overlay on the cached image, with its hostname, login user and host keys.

A ``container`` is what RunPod and Vast.ai rent: login root, no sudo, no
Docker, no systemd (``/.dockerenv``).
"""

import os
import time
from pathlib import Path

from .proc import sh


def mount(d, base):
    """Node directory ``d``'s root: an overlay on ``base``, its writes in ``d``."""
    root = d / "root"
    for sub in ("upper", "work", "root"):
        (d / sub).mkdir(parents=True, exist_ok=True)
    sh("mount", "-t", "overlay", "overlay", "-o", f"lowerdir={base},upperdir={d / 'upper'},workdir={d / 'work'}", root)
    return root


def name_host(root, hostname):
    (root / "etc/hostname").write_text(hostname + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n")


def containerize(root):
    """Make ``root`` a root-only container's; return the login user and its home."""
    for tool in ("usr/bin/sudo", "usr/bin/docker", "usr/sbin/dockerd", "usr/bin/dockerd"):
        (root / tool).unlink(missing_ok=True)
    (root / ".dockerenv").write_text("")
    return "root", "/root"


def add_user(root, user):
    """``user`` with a home, no password and passwordless sudo; return its home."""
    sh("chroot", root, "useradd", "--create-home", "--shell", "/bin/bash", "--password", "*", user)
    sudoers = root / "etc/sudoers.d" / f"90-{user}"
    sudoers.write_text(f"{user} ALL=(ALL) NOPASSWD:ALL\n")
    sudoers.chmod(0o440)
    return f"/home/{user}"


def authorize(root, user, home, pubkey):
    """``pubkey`` as ``user``'s only authorized key."""
    sh("chroot", root, "install", "-d", "-m", "700", "-o", user, "-g", user, f"{home}/.ssh")
    keys = root / home.lstrip("/") / ".ssh/authorized_keys"
    keys.write_text(pubkey)
    sh("chroot", root, "chown", f"{user}:{user}", f"{home}/.ssh/authorized_keys")
    keys.chmod(0o600)


def host_keys(root):
    """New host keys for ``root``'s sshd, as a freshly installed machine makes."""
    for key in (Path(root) / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    sh("chroot", root, "ssh-keygen", "-A")


def make(d, base, hostname, user, pubkey, container=False):
    """Node directory ``d``'s root, named ``hostname``, ``user`` logging in with ``pubkey``.

    Return the root, the login user and its home."""
    root = mount(d, base)
    name_host(root, hostname)
    user, home = containerize(root) if container else (user, add_user(root, user))
    authorize(root, user, home, pubkey)
    sh("chroot", root, "ssh-keygen", "-A")
    return root, user, home


def unmount(root):
    """Unmount a node's root (lazily, if it is still busy); nothing if it is not mounted."""
    if os.path.ismount(root) and sh("umount", root, check=False).returncode:
        time.sleep(0.2)
        sh("umount", "-l", root, check=False)
