"""Fixtures: the sandbox cluster (real sshd per node) and a laptop to run fab on.

The end-to-end tests need root (namespaces, mounts); they fail, never skip,
without it: CI runs as root.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from multinode.sandbox import Sandbox

# A run started in the background of a script (`./test &`, no job control) starts with SIGINT
# ignored, and every fab it starts would ignore it too (an ignored signal stays ignored across
# exec): the tests that press Ctrl-C need it delivered as on a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

ROOT = Path(__file__).resolve().parents[1]
FAB = str(Path(sys.executable).parent / "fab")
USERS = ["ubuntu", "user", "ubuntu"]
SECRETS = {"ANTHROPIC_API_KEY": "sk-ant-test-9f8e7d6c5b4a", "HF_TOKEN": "hf_testtoken_1a2b3c4d"}
WANDB = "wandb-test-key-5e6f7a8b"


def node_sh(sandbox, nid, script):
    """Run a bash script on a sandbox node as its login user."""
    return sandbox.exec(nid, "bash", "-c", script, user=sandbox.nodes[nid]["user"], check=False)


class Laptop:
    """A user's laptop: its own HOME, running the real fab CLI in the laptop namespace."""

    def __init__(self, sandbox, home, key):
        self.sandbox = sandbox
        self.home = home
        ssh = home / ".ssh"
        ssh.mkdir(mode=0o700, parents=True)
        shutil.copy(key, ssh / "id_ed25519")
        shutil.copy(f"{key}.pub", ssh / "id_ed25519.pub")
        self.env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "PYTHONDONTWRITEBYTECODE": "1"}

    def configure(self, **multinode):
        """Write the laptop's ~/.fabric.yaml (JSON is YAML) with these multinode settings."""
        (self.home / ".fabric.yaml").write_text(json.dumps({"multinode": multinode}))

    def run(self, *cmd, stdin=None, timeout=120, cwd=ROOT):
        return subprocess.run(
            self.sandbox.laptop_cmd(*cmd, env=self.env), cwd=cwd, input=stdin,
            capture_output=True, text=True, timeout=timeout,
        )

    def fab(self, *args, **kw):
        return self.run(FAB, *args, **kw)

    def ssh(self, alias, command):
        """``ssh ALIAS COMMAND`` as the user types it: OpenSSH then records the node's
        other host key types too (UpdateHostKeys, its default for the user's own
        known_hosts; named here only because HOME is not this user's passwd home)."""
        ssh_dir = self.home / ".ssh"
        return self.run(
            "ssh", "-F", str(ssh_dir / "config"), "-o", f"UserKnownHostsFile={ssh_dir / 'known_hosts'}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "UpdateHostKeys=yes", alias, command,
        )

    def snapshot(self):
        """Every file under HOME with its bytes, mode and mtime."""
        return {
            str(p.relative_to(self.home)): (p.read_bytes(), p.stat().st_mode, p.stat().st_mtime_ns)
            for p in sorted(self.home.rglob("*")) if p.is_file()
        }


@pytest.fixture(scope="session")
def laptop_key(tmp_path_factory):
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "laptop", "-f", str(key)], check=True)
    return key


@pytest.fixture(scope="session")
def sandbox(laptop_key):
    if os.geteuid() != 0:
        pytest.fail("the sandbox tests need root (network namespaces, mounts); CI runs them as root")
    # MULTINODE_TEST_SANDBOX: another name, for a second test run on the same machine.
    sb = Sandbox(os.environ.get("MULTINODE_TEST_SANDBOX", "mntest"))
    try:
        sb.up(USERS, Path(f"{laptop_key}.pub").read_text())
        yield sb
    finally:
        sb.down()


@pytest.fixture
def make_sandbox(laptop_key, tmp_path):
    """Extra sandboxes for one test (another name, other nodes), always torn down."""
    made = []

    def make(name, users, containers=()):
        sb = Sandbox(name)
        made.append(sb)
        sb.up(users, Path(f"{laptop_key}.pub").read_text(), containers=containers)
        return sb, Laptop(sb, tmp_path / f"home-{name}", laptop_key)

    yield make
    for sb in made:
        sb.down()


@pytest.fixture
def laptop(sandbox, laptop_key, tmp_path):
    return Laptop(sandbox, tmp_path / "home", laptop_key)


@pytest.fixture
def healthy(sandbox):
    """Every node's sshd and links (public and private) up again after the test, whatever it did."""
    yield sandbox
    for nid in range(len(sandbox.nodes)):
        for ifname in ("eth0", "ens7"):
            sandbox.exec(nid, "ip", "link", "set", ifname, "up")
        if not sandbox.nodes[nid].get("sshd_pid"):
            sandbox.start_sshd(nid)


def as_a_user(laptop, sandbox, **more):
    """Configure ``laptop`` as a user does for ``sandbox``: the forge's repos, a git identity,
    secrets (in the environment and a file), logs in its home; ``more`` settings besides."""
    wandb = laptop.home / "wandb.key"
    wandb.write_text(WANDB + "\n")
    laptop.env.update(SECRETS)
    laptop.configure(**{
        **sandbox.forge.config(),
        "git": {"name": "Ada Lovelace", "email": "ada@example.invalid"},
        "secrets": {"files": {"WANDB_API_KEY": str(wandb)}},
        "log_dir": str(laptop.home / "logs"),
        **more,
    })
    return laptop


@pytest.fixture
def configured(laptop, sandbox):
    return as_a_user(laptop, sandbox, tools=[
        {"name": "hello", "check": "test -x ~/.local/bin/hello",
         "install": "printf '#!/bin/sh\\necho hi\\n' > ~/.local/bin/hello && chmod +x ~/.local/bin/hello"}])
