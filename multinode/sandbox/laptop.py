"""The sandbox's laptop: a namespace on the public bridge only (like a real laptop, it cannot
reach private addresses), with a home of its own: its key pair, ``~/.ssh``, multinode settings,
and a resolver of its own: ``ip netns exec`` binds ``/etc/netns/NS/hosts`` over ``/etc/hosts``,
so names given to the sandbox's nodes (`name_hosts`) resolve there alone."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .network import LAPTOP_IP, PUBLIC_IF, netns, plug

SHELL_RC = """# The multinode sandbox's laptop: its own HOME; OpenSSH reads the passwd home, so ssh is told.
[ -f /etc/bash.bashrc ] && . /etc/bash.bashrc
ssh() { command ssh -F "$HOME/.ssh/config" -o UserKnownHostsFile="$HOME/.ssh/known_hosts" "$@"; }
export -f ssh
PS1="(sandbox laptop) \\w\\$ "
"""


def connect(switch, ns):
    """The laptop's namespace ``ns``, on the public bridge of ``switch``."""
    netns(ns)
    plug(switch, ns, PUBLIC_IF, "br-pub", "laptop", LAPTOP_IP)


def hosts_file(ns):
    return Path("/etc/netns") / ns / "hosts"


def name_hosts(ns, names):
    """The laptop's own name resolution: ``names`` ({name: address}) beside localhost; none: removed."""
    path = hosts_file(ns)
    if not names:
        shutil.rmtree(path.parent, ignore_errors=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost"] + [f"{addr}\t{name}" for name, addr in names.items()]
    tmp = path.with_name("hosts.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def cmd(ns, *argv, env=None):
    """argv that runs ``argv`` on the laptop (namespace ``ns``), with ``env``."""
    env_args = [f"{k}={v}" for k, v in (env or {}).items()]
    return ["ip", "netns", "exec", ns, "env", *env_args, *argv]


def laptop_dir(sandbox):
    return sandbox.dir.parent / f".laptop-{sandbox.name}"


def laptop_home(sandbox):
    """The sandbox laptop's own home: its key pair, its ~/.ssh, its multinode settings."""
    home = laptop_dir(sandbox)
    (home / ".ssh").mkdir(parents=True, exist_ok=True, mode=0o700)
    key = home / ".ssh/id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "sandbox-laptop", "-f", str(key)],
                       check=True, stdin=subprocess.DEVNULL)
    return home


def shell_argv(sandbox, command=None):
    """argv of a shell on the laptop in its own home (or of ``command`` run by bash there)."""
    home = laptop_home(sandbox)
    rc = home / ".multinode-shellrc"
    rc.write_text(SHELL_RC)
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "XDG_STATE_HOME": str(home / ".local/state"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    if command:
        env["BASH_ENV"] = str(rc)  # read by a non-interactive bash
        argv = ["bash", "-c", command]
    else:
        argv = ["bash", "--rcfile", str(rc), "-i"]
    return sandbox.laptop_cmd(*argv, env=env)
