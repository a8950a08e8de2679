"""The checklist's probe, run by real bash on this machine as two "nodes" on 127.0.0.1 and 127.0.0.2.

Which Python it runs (the venv's, else the system's, else none: bash's /dev/tcp
to sshd's port) and what each node reports for the other; loopback only. And
how a failed pair is said: in a network namespace of the test's own (root),
routes that fail a connect each with its own errno.
"""

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from multinode.config import DEFAULTS, options
from multinode.inventory import Node
from multinode.checks import verify_script
from multinode.protocol import checks as check_lines

# Loopback addresses, which the inventory refuses from users: built directly.
NODES = [Node(0, "rental0", "198.18.0.10", "127.0.0.1"), Node(1, "rental1", "198.18.0.11", "127.0.0.2")]
AVAILABLE = {"secrets_env": [], "wandb": False, "huggingface": False}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def checklists(tmp_path, venv, path=None, check_port=22):
    """Both nodes' checklists run at once: [(checks, pairs)] for node 0 and node 1."""
    o = options({"multinode": {**DEFAULTS, "workspace": str(tmp_path / "ws"), "ray": {"enabled": False},
                               "dotfiles": {"repo": ""}, "tools": [],
                               "repo": {"url": "git://forge.example/proj.git", "branch": "main", "name": ""},
                               "network": {**DEFAULTS["network"], "timeout": 3, "probe_port": free_port(),
                                           "check_port": check_port}}})
    if venv:
        (tmp_path / "ws/proj/venv/bin").mkdir(parents=True)
        os.symlink(sys.executable, tmp_path / "ws/proj/venv/bin/python")
    env = {**os.environ, "HOME": str(tmp_path), "PATH": path or os.environ["PATH"]}
    runs = [subprocess.Popen(["bash", "-c", verify_script(node, NODES, o, AVAILABLE)], stdout=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, env=env, text=True) for node in NODES]
    results = []
    for run in runs:
        out = run.communicate(timeout=30)[0]
        assert "END checklist" in out.splitlines()
        checks = check_lines(out)
        pairs = dict(line.split(" ", 2)[1:] for line in out.splitlines() if line.startswith("PAIR "))
        results.append((checks, pairs))
    return results


def test_the_venvs_python_runs_the_probe(tmp_path):
    (node0, pairs0), (node1, pairs1) = checklists(tmp_path, venv=True)
    assert node0["venv-python"] == node1["venv-python"] == ("ok", ".".join(map(str, sys.version_info[:3])))
    assert pairs0 == {"127.0.0.2": "ok"} and pairs1 == {"127.0.0.1": "ok"}


def test_without_the_venv_the_systems_python_probes(tmp_path):
    (node0, pairs0), (_, pairs1) = checklists(tmp_path, venv=False)
    assert node0["venv-python"][0] == "failed" and "venv/bin/python does not run" in node0["venv-python"][1]
    assert pairs0 == {"127.0.0.2": "ok"} and pairs1 == {"127.0.0.1": "ok"}


def accept_all(listener):
    try:
        while True:
            listener.accept()[0].close()
    except OSError:  # shut down
        pass


def test_without_any_python_bash_probes_the_ssh_port(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in os.listdir(d):
            if not tool.startswith("python") and not (bin_dir / tool).exists():
                os.symlink(Path(d) / tool, bin_dir / tool)
    assert shutil.which("python3", path=str(bin_dir)) is None
    port = free_port()
    listeners = []
    for ip in ("127.0.0.1", "127.0.0.2"):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        s.listen(16)
        listeners.append(s)
        threading.Thread(target=accept_all, args=(s,), daemon=True).start()
    (node0, pairs0), (_, pairs1) = checklists(tmp_path, venv=False, path=str(bin_dir), check_port=port)
    assert node0["venv-python"][0] == "failed"
    assert pairs0 == {"127.0.0.2": "ok"} and pairs1 == {"127.0.0.1": "ok"}
    listeners[1].shutdown(socket.SHUT_RDWR)  # node 1's "sshd" is gone: node 0 says so
    (_, pairs0), _ = checklists(tmp_path / "again", venv=False, path=str(bin_dir), check_port=port)
    assert pairs0 == {"127.0.0.2": "refused"}


# Routes that each fail a connect at once, in their own way: (kind, a peer behind it, errno it gives).
ROUTES = [("blackhole", "198.18.250.7", "EINVAL"), ("unreachable", "198.18.251.7", "EHOSTUNREACH"),
          ("prohibit", "198.18.252.7", "EACCES")]


@pytest.fixture
def netns():
    """A network namespace of this test's own, loopback up, with the routes of ROUTES; removed afterwards."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (a network namespace); CI runs it as root")
    name = f"mnh2probe{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        for kind, peer, _ in ROUTES:
            subprocess.run(["ip", "-n", name, "route", "add", kind, f"{peer.rsplit('.', 1)[0]}.0/24"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def test_a_failed_pair_is_named_in_words_never_an_errno(netns, tmp_path):
    """Python's probe: each route's errno, and a refusal, said as refused / no route."""
    peers = [peer for _, peer, _ in ROUTES] + ["127.0.0.2"]
    probe = Path(__file__).resolve().parents[1] / "templates/verify_probe.py"
    r = subprocess.run(["ip", "netns", "exec", netns, sys.executable, "-I", "-S", str(probe), "system", "1",
                        str(free_port()), "127.0.0.1", *peers], capture_output=True, text=True, timeout=30)
    pairs = dict(line.split(" ", 2)[1:] for line in r.stdout.splitlines() if line.startswith("PAIR "))
    assert pairs == {"198.18.250.7": "no route", "198.18.251.7": "no route", "198.18.252.7": "no route",
                     "127.0.0.2": "refused"}, r.stdout + r.stderr


def test_without_python_bash_names_a_failed_pair_in_words_too(netns, tmp_path):
    """bash's /dev/tcp fallback says what the Python probe says (bash itself: "Invalid argument" for a blackhole)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        for tool in os.listdir(d):
            if not tool.startswith("python") and not (bin_dir / tool).exists():
                os.symlink(Path(d) / tool, bin_dir / tool)
    nodes = [Node(0, "rental0", "198.18.0.10", "127.0.0.1")] + [
        Node(i + 1, f"rental{i + 1}", f"198.18.0.{11 + i}", peer)
        for i, peer in enumerate([peer for _, peer, _ in ROUTES] + ["127.0.0.2"])]
    o = options({"multinode": {**DEFAULTS, "workspace": str(tmp_path / "ws"), "ray": {"enabled": False},
                               "dotfiles": {"repo": ""}, "tools": [],
                               "repo": {"url": "git://forge.example/proj.git", "branch": "main", "name": ""},
                               "network": {**DEFAULTS["network"], "timeout": 2, "check_port": free_port()}}})
    r = subprocess.run(["ip", "netns", "exec", netns, "env", f"HOME={tmp_path}", f"PATH={bin_dir}", "bash", "-c",
                        verify_script(nodes[0], nodes, o, AVAILABLE)], capture_output=True, text=True,
                       stdin=subprocess.DEVNULL, timeout=60)
    assert "END checklist" in r.stdout.splitlines(), r.stdout + r.stderr
    pairs = dict(line.split(" ", 2)[1:] for line in r.stdout.splitlines() if line.startswith("PAIR "))
    assert pairs == {"198.18.250.7": "no route", "198.18.251.7": "no route", "198.18.252.7": "no route",
                     "127.0.0.2": "refused"}, r.stdout
