"""The sandbox itself: isolation as on a real provider, and its CLI."""

import subprocess
import sys

from multinode.sandbox import Sandbox
from tests.conftest import ROOT

PROBE = "import socket,sys\ntry:\n socket.create_connection((sys.argv[1], 22), timeout=3); print('open')\nexcept OSError as e: print(e.strerror)"


def test_laptop_reaches_public_not_private(laptop, sandbox):
    node = sandbox.nodes[1]
    assert laptop.run(sys.executable, "-c", PROBE, node["public"]).stdout.strip() == "open"
    assert laptop.run(sys.executable, "-c", PROBE, node["private"]).stdout.strip() == "Network is unreachable"
    # Nodes reach each other privately, and have no route out.
    routes = sandbox.exec(0, "ip", "-4", "route").stdout
    assert "default" not in routes and "198.19.0.0/24 dev ens7" in routes
    other = sandbox.exec(0, "python3", "-c", PROBE, sandbox.nodes[1]["private"]).stdout.strip()
    assert other == "open"
    assert sandbox.exec(1, "hostname").stdout == "node1\n"
    assert sandbox.exec(1, "id", "-un", user="user").stdout == "user\n"
    assert sandbox.exec(1, "sudo", "-n", "true", user="user").returncode == 0


def test_each_node_counts_its_own_cpu(laptop, sandbox, laptop_key):
    """What runs on a node through its sshd is that node's CPU time (the benchmark reads it)."""
    before = [sandbox.cpu_seconds(n) for n in range(3)]
    if None in before:
        import pytest

        pytest.skip("no cgroup CPU accounting on this machine")
    burn = "python3 -c 'sum(range(60_000_000))'"
    r = laptop.run("ssh", "-i", str(laptop_key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                   "-o", "BatchMode=yes", f"user@{sandbox.nodes[1]['public']}", burn)
    assert r.returncode == 0, r.stderr
    used = [sandbox.cpu_seconds(n) - b for n, b in enumerate(before)]
    assert used[1] > 0.3 and used[0] < 0.1 and used[2] < 0.1, used


def test_cli_up_status_down_leaves_nothing(laptop_key):
    fab = [str(ROOT / ".venv/bin/fab")]
    up = subprocess.run(fab + ["sandbox.up", "--nodes", "2", "--users", "user", "--key", f"{laptop_key}.pub",
                               "--name", "mncli"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "fab sandbox.shell --name mncli` opens a shell there" in up.stdout
        assert "  fab -H 198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.11 setup\n" in up.stdout
        status = subprocess.run(fab + ["sandbox.status", "--name", "mncli"], cwd=ROOT, capture_output=True, text=True)
        assert status.stdout.count("sshd running") == 2 and "user user" in status.stdout
    finally:
        down = subprocess.run(fab + ["sandbox.down", "--name", "mncli"], cwd=ROOT, capture_output=True, text=True)
    assert down.returncode == 0
    assert "mncli" not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not Sandbox("mncli").nodes
    group = Sandbox("mncli")._cgroup(0)
    assert group is None or not group.parent.exists()  # its CPU accounting groups too
    bad = subprocess.run(fab + ["sandbox.up", "--nodes", "2", "--users", "a,b,c"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and "3 users for 2 nodes" in bad.stderr


def test_the_sandbox_cli_brings_its_own_laptop(laptop_key):
    """sandbox.up from the CLI, then multinode run from the sandbox's laptop with no extra flags."""
    fab = [str(ROOT / ".venv/bin/fab")]
    run = lambda *args: subprocess.run([*fab, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)  # noqa: E731
    up = run("sandbox.up", "--name", "mncli", "--nodes", "2")
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "fab sandbox.shell --name mncli" in up.stdout
        sb = Sandbox("mncli")
        cmd = f"fab -H {sb.hosts} hostkeys detect-user >/dev/null && ssh rental1 hostname && fab detect-user | tail -1"
        r = run("sandbox.shell", "--name", "mncli", "--command", cmd)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines() == ["node1", "all 2 node(s) ok"]  # the remembered cluster, its own ssh config
        missing = run("sandbox.shell", "--name", "mnnone")
        assert missing.returncode == 2 and missing.stderr.strip() == (
            "multinode: sandbox mnnone is not up: run fab sandbox.up --name mnnone")
    finally:
        down = run("sandbox.down", "--name", "mncli")
    assert down.returncode == 0 and not (Sandbox("mncli").dir.parent / ".laptop-mncli").exists()


def test_the_readmes_first_command_ends_with_a_ready_cluster():
    """./demo as the README runs it (its tools already here: it installs nothing), then verify as documented."""
    import os

    from tests.docblocks import block, commands

    demo = commands(block("README.md", "two-commands"))[0]  # the second, ./test, is what CI runs (.ci/run)
    assert demo == "./demo"
    env = {**os.environ, "MULTINODE_SANDBOX": "mndemo"}
    try:
        r = subprocess.run([str(ROOT / demo)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Cluster Ready: 3 node(s) setup and verified" in r.stdout
        assert "uv run fab sandbox.shell --name mndemo" in r.stdout and "uv run fab sandbox.down --name mndemo" in r.stdout
        v = subprocess.run([str(ROOT / ".venv/bin/fab"), "sandbox.shell", "--name", "mndemo", "--command", "fab verify"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert v.returncode == 0, v.stdout + v.stderr
        assert "✗" not in v.stdout and "all 3 node(s) ok" in v.stdout
    finally:
        subprocess.run([str(ROOT / ".venv/bin/fab"), "sandbox.down", "--name", "mndemo"], cwd=ROOT, capture_output=True)
