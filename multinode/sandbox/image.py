"""The sandbox nodes' base root filesystem: a cached debootstrap of Debian.

Built once (about a minute) into ``$MULTINODE_SANDBOX_CACHE`` (default
``/var/cache/multinode``), under a name derived from what goes into it, so a
change of the package list builds a new image and an old one is never reused.
It holds what a fresh rental image holds; nodes overlay it, never write it.
"""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

PACKAGES = [
    "openssh-server", "sudo", "tmux", "git", "python3", "python3-venv",
    "iproute2", "procps", "curl", "ca-certificates",
    # Docker's install needs the internet (apt, get.docker.com): a rental
    # image has it anyway, so the sandbox's has it too; bootstrap then only
    # puts the login user in the docker group.
    "docker.io",
]
SUITE = "bookworm"
RECIPE_VERSION = "1"  # bump when the steps below change

SSHD_CONFIG = """\
# sandbox node: keys only, no DNS lookups of clients
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
PrintMotd no
"""


def cache_dir():
    return Path(os.environ.get("MULTINODE_SANDBOX_CACHE", "/var/cache/multinode"))


def mirror():
    """The Debian mirror apt on this machine uses (deb822 or one-line form)."""
    if os.environ.get("MULTINODE_SANDBOX_MIRROR"):
        return os.environ["MULTINODE_SANDBOX_MIRROR"]
    for path in sorted(Path("/etc/apt").glob("sources.list.d/*.sources")) + [Path("/etc/apt/sources.list")]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["URIs:"] and len(words) > 1 and "security" not in words[1]:
                return words[1]
            if words[:1] == ["deb"] and "security" not in line:
                return next(w for w in words[1:] if "://" in w)
    return "http://deb.debian.org/debian"


def image_path():
    recipe = "\n".join([SUITE, RECIPE_VERSION, SSHD_CONFIG, *PACKAGES])
    return cache_dir() / f"image-{SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


def build(log=print):
    """Return the image's root directory, building it first if it is missing."""
    root = image_path()
    if (root / ".complete").exists():
        return root
    tmp = root.with_name(root.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    log(f"sandbox: building the node image in {root} (debootstrap, about a minute, once)")
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(tmp), mirror()],
        check=True, stdout=subprocess.DEVNULL,
    )
    # Every node generates its own host keys; none may share the image's.
    for key in (tmp / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (tmp / "etc/ssh/sshd_config.d/sandbox.conf").write_text(SSHD_CONFIG)
    subprocess.run(["chroot", str(tmp), "apt-get", "clean"], check=True)
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root
