"""End to end: every rental reached, over the real fab CLI on the sandbox (issue 25).

Nodes given by DNS names the laptop resolves (its own hosts file), a worker
the laptop cannot reach (set up through the head), a jump host in front of
nodes the laptop cannot reach, and verify's rental checks (/dev/shm, disk).
"""

import json
import os
import re
import signal

import pytest

from tests.test_hostkeys_users_e2e import accepted, rows

# No workspace venv, Ray or dotfiles: what these tests prove is how nodes are reached.
LIGHT = {"repo": {"url": ""}, "dotfiles": {"repo": ""}, "ray": {"enabled": False}}
NAMES = {"head.mnreach.test": 0, "gpu1.mnreach.test": 1, "gpu2.mnreach.test": 2}


def fingerprint(sb, nid):
    return sb.exec(nid, "ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]


@pytest.fixture
def reach(laptop, healthy):
    """The laptop with light settings; afterwards no name resolves, every node is reachable again."""
    sb = healthy
    laptop.configure(**{**sb.forge.config(), **LIGHT}, log_dir=str(laptop.home / "logs"))
    yield laptop, sb
    sb.name_hosts({})
    for nid in range(len(sb.nodes)):
        sb.hide(nid, False)


def test_nodes_by_name_resolved_on_the_laptop_pinned_by_name(reach):
    laptop, sb = reach
    sb.name_hosts({name: sb.nodes[nid]["public"] for name, nid in NAMES.items()})
    # A provider's table: a name, a pasted `ssh -p PORT USER@NAME` line, the -H form; private addresses beside.
    table = (f"Public                                  Private\n"
             f"HEAD.mnreach.test                        {sb.nodes[0]['private']}\n"
             f"ssh -p 2222 user@gpu1.mnreach.test -L 8080:localhost:8080   {sb.nodes[1]['private']}\n"
             f"gpu2.mnreach.test:{sb.nodes[2]['private']}\n")
    r = laptop.fab("-H", "-", "setup", "--tail", "0", stdin=table, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ("multinode: resolved on this laptop: rental0 head.mnreach.test is 198.18.0.10; rental1 gpu1.mnreach.test "
            "is 198.18.0.11; rental2 gpu2.mnreach.test is 198.18.0.12\n") in r.stderr
    table_rows = {line.split()[0]: line.split()[1:] for line in r.stdout.split("\nCluster\n")[1].splitlines()[1:4]}
    assert table_rows["rental1"][:4] == ["[gpu1.mnreach.test]:2222", "(198.18.0.11)", "198.19.0.11", "ens7"]
    assert table_rows["rental0"][:4] == ["head.mnreach.test", "(198.18.0.10)", "198.19.0.10", "ens7"]
    # Pinned under the name (and port), as OpenSSH records it: plain ssh by alias verifies it strictly.
    known = (laptop.home / ".ssh/known_hosts").read_text()
    assert re.search(r"^head\.mnreach\.test ssh-ed25519 ", known, re.M)
    assert re.search(r"^\[gpu1\.mnreach\.test\]:2222 ssh-ed25519 ", known, re.M) and "198.18.0.1" not in known
    pins = json.loads((laptop.home / ".config/multinode/pins.json").read_text())["pins"]
    assert sorted((p["public"], p["port"]) for p in pins) == [
        ("gpu1.mnreach.test", 2222), ("gpu2.mnreach.test", 22), ("head.mnreach.test", 22)]
    assert "HostName gpu1.mnreach.test\n" in (laptop.home / ".ssh/config").read_text()
    who = laptop.ssh("rental1", "hostname; whoami")
    assert (who.returncode, who.stdout) == (0, "node1\nuser\n"), who.stderr

    # A rekeyed node behind a name: refused like any pinned key, named with both fingerprints.
    old = fingerprint(sb, 2)
    sb.rekey(2)
    r = laptop.fab("verify")
    assert r.returncode == 1
    status, detail = rows(r.stdout, "verify")["rental2"]
    assert status == "FAILED" and detail.startswith("host key of gpu2.mnreach.test changed: multinode pinned 256 "
                                                    f"{old}") and fingerprint(sb, 2) in detail
    assert rows(r.stdout, "verify")["rental0"][0] == "ok"
    assert laptop.ssh("rental2", "true").returncode != 0  # OpenSSH refuses it by the name too

    # A name that no longer resolves, or resolves to loopback: exit 2, one line naming it, nothing contacted.
    before = [accepted(sb, n) for n in range(3)]
    sb.name_hosts({"head.mnreach.test": sb.nodes[0]["public"], "gpu2.mnreach.test": sb.nodes[2]["public"]})
    r = laptop.fab("verify")
    assert r.returncode == 2 and r.stdout == ""
    assert re.fullmatch(r"multinode: rental1: name 'gpu1\.mnreach\.test' does not resolve on this laptop \(.+\)\n",
                        r.stderr), r.stderr
    sb.name_hosts({name: "127.0.0.1" if nid == 1 else sb.nodes[nid]["public"] for name, nid in NAMES.items()})
    r = laptop.fab("verify")
    assert (r.returncode, r.stderr) == (2, "multinode: rental1: name 'gpu1.mnreach.test' resolves to 127.0.0.1: "
                                           "loopback, not a machine's\n")
    assert [accepted(sb, n) for n in range(3)] == before


def test_a_jump_host_in_front_of_every_node(reach):
    laptop, sb = reach
    bastion = sb.nodes[2]
    hosts = ",".join(f"{sb.nodes[n]['public']}:{sb.nodes[n]['private']}" for n in (0, 1))
    for nid in (0, 1):
        sb.hide(nid)  # the laptop reaches the bastion alone
    r = laptop.fab("-t", "3", "-H", hosts, "hostkeys")
    assert r.returncode == 1 and "No route to host" in rows(r.stdout, "hostkeys")["rental0"][1]

    before = [accepted(sb, n) for n in range(3)]
    logs = [len(sb.sshd_log(n)) for n in range(3)]
    r = laptop.fab("-H", hosts, "setup", "--tail", "0", "--jump", f"ubuntu@{bastion['public']}", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert rows(r.stdout, "hostkeys")["rental-jump"] == ("changed", f"recorded 256 {fingerprint(sb, 2)} (ED25519)")
    assert "198.18.0.10 via rental-jump" in r.stdout
    # The nodes saw the bastion log in, never the laptop; the laptop's key logged in to each, once.
    for nid in (0, 1):
        log = sb.sshd_log(nid)[logs[nid]:]
        assert len(re.findall(rf"Accepted publickey for \S+ from {re.escape(bastion['public'])} ", log)) == 1, log
        assert accepted(sb, nid) == before[nid]
    config = (laptop.home / ".ssh/config").read_text()
    assert "Host rental-jump\n    HostName 198.18.0.12\n    User ubuntu\n" in config
    assert config.count("    ProxyJump rental-jump\n") == 2
    assert laptop.ssh("rental1", "hostname").stdout == "node1\n"
    # Remembered with the cluster: later runs go through it without --jump.
    assert json.loads((laptop.home / ".config/multinode/cluster.json").read_text())["jump"] == "ubuntu@198.18.0.12:22"
    exe = laptop.fab("exec", "hostname")
    assert exe.returncode == 0 and "node0" in exe.stdout and "node1" in exe.stdout
    assert laptop.fab("-H", hosts, "verify").returncode == 0  # the same machines again: the same jump host

    # Its key is pinned as a node's: a changed one stops every node behind it, named.
    sb.rekey(2)
    r = laptop.fab("verify")
    assert r.returncode == 1
    for alias in ("rental0", "rental1"):
        status, detail = rows(r.stdout, "verify")[alias]
        assert status == "FAILED" and detail.startswith("reached through rental-jump (198.18.0.12), which failed: host "
                                                        "key of 198.18.0.12 changed")
        assert "`fab hostkeys --reinstalled rental-jump`" in detail
    assert laptop.ssh("rental1", "true").returncode != 0
    r = laptop.fab("hostkeys")
    assert r.returncode == 1 and rows(r.stdout, "hostkeys")["rental-jump"][0] == "FAILED"
    r = laptop.fab("hostkeys", "--reinstalled", "rental-jump", "verify")
    assert r.returncode == 0, r.stdout + r.stderr
    bad = laptop.fab("hostkeys", "--jump", "-oProxyCommand=x")
    assert bad.returncode == 2 and bad.stderr.startswith("multinode: bad jump host '-oProxyCommand=x'")


def test_verify_checks_what_the_rental_offers(reach):
    laptop, sb = reach
    laptop.configure(**{**sb.forge.config(), **LIGHT}, rental={"min_shm_gib": 0.5, "min_disk_gib": 0.001})
    assert laptop.fab("-H", sb.hosts, "hostkeys").returncode == 0

    def rental_checks():
        r = laptop.fab("verify", "--json")
        nodes = json.loads(r.stdout)["nodes"]
        return {alias: {name: (c["status"], c["reason"]) for name, c in node["checks"].items()
                        if name in ("shm", "disk", "public-address")} | {"interface": node["interface"]}
                for alias, node in nodes.items()}

    met = rental_checks()
    for nid in range(3):
        got = met[f"rental{nid}"]
        assert got["shm"][0] == got["disk"][0] == "ok" and got["disk"][1].endswith(" free")
        assert got["public-address"] == ("ok", f"{sb.nodes[nid]['public']} on eth0") and got["interface"] == "ens7"
    # A container's /dev/shm (Docker's 64 MiB) and a disk under the minimum fail, named.
    sb.exec(1, "mount", "-t", "tmpfs", "-o", "size=64m,mode=1777", "shm", "/dev/shm")
    try:
        laptop.configure(**{**sb.forge.config(), **LIGHT}, rental={"min_shm_gib": 0.5, "min_disk_gib": 100_000})
        missed = rental_checks()
    finally:
        sb.exec(1, "umount", "/dev/shm")
    assert missed["rental1"]["shm"] == ("fail", "/dev/shm is 64 MiB, under 512 MiB (multinode.rental.min_shm_gib): "
                                                "NCCL fails with \"unhandled system error\"; run the container with "
                                                "--shm-size or --ipc=host")
    assert missed["rental0"]["shm"][0] == "ok"
    for nid in range(3):
        status, reason = missed[f"rental{nid}"]["disk"]
        assert status == "fail" and reason.endswith(" under 100000.0 GiB (multinode.rental.min_disk_gib)")


def test_a_worker_without_public_address_is_set_up_through_the_head(configured, healthy, tmp_path):
    laptop, sb = configured, healthy
    sb.hide(2)  # the laptop cannot reach node 2 at all; the head reaches it privately
    # An agent with the laptop's key runs: nothing of it may reach any node.
    sock = tmp_path / "agent.sock"
    agent = laptop.run("ssh-agent", "-s", "-a", str(sock))
    agent_pid = int(re.search(r"SSH_AGENT_PID=(\d+)", agent.stdout).group(1))
    laptop.env["SSH_AUTH_SOCK"] = str(sock)
    logged = len(sb.sshd_log(2))
    try:
        assert laptop.run("ssh-add", str(laptop.home / ".ssh/id_ed25519")).returncode == 0
        hosts = f"{sb.nodes[0]['public']}:{sb.nodes[0]['private']},{sb.nodes[1]['public']}:{sb.nodes[1]['private']}," \
                f"ubuntu@:{sb.nodes[2]['private']}"
        r = laptop.fab("-H", hosts, "setup", "--tail", "0", timeout=900)
        assert r.returncode == 0, r.stdout + r.stderr
        key = fingerprint(sb, 2)
        assert rows(r.stdout, "hostkeys")["rental2"] in (("changed", f"recorded 256 {key} (ED25519) (read through rental0)"),
                                                         ("ok", f"256 {key} (ED25519) (read through rental0)"))
        assert rows(r.stdout, "ray")["rental0"] == ("ok", "3 of 3 node(s) in the Ray cluster")
        assert re.search(r"rental2\s+via rental0\s+198\.19\.0\.12\s+ens7\s+ubuntu\s+ok", r.stdout)
        # Logged in to from the head's private address (the laptop's own key, end to end), never from the laptop.
        log = sb.sshd_log(2)[logged:]
        assert "from 198.18.0.1 " not in log and "Accepted publickey for ubuntu from 198.19.0.10 " in log
        assert re.search(r"^198\.19\.0\.12 ssh-ed25519 ", (laptop.home / ".ssh/known_hosts").read_text(), re.M)
        config = (laptop.home / ".ssh/config").read_text()
        assert "Host rental2\n    HostName 198.19.0.12\n    User ubuntu\n" in config and "    ProxyJump rental0\n" in config
        assert laptop.ssh("rental2", "hostname").stdout == "node2\n"

        # Every task works for it over the head: verify, exec, sync.
        r = laptop.fab("verify", "--json")
        nodes = json.loads(r.stdout)["nodes"]
        assert r.returncode == 0, r.stdout + r.stderr
        assert nodes["rental2"]["checks"]["public-address"] == {"status": "na", "reason": "no public address: reached "
                                                                                         "through the head"}
        src = tmp_path / "src"
        src.mkdir()
        (src / "train.py").write_text("print('hi')\n")
        r = laptop.fab("sync", str(src), "--dest", "/workspace/reach-src", "exec",
                       "cat /workspace/reach-src/train.py; echo ${SSH_AUTH_SOCK:-no agent}; ls -d /tmp/ssh-* 2>/dev/null | wc -l")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "print('hi')\nno agent\n0\n" in r.stdout and "rental0,rental1,rental2" in r.stdout.replace(" ", "")
        for nid in range(3):  # no agent socket on any node, whatever ran there
            found = sb.exec(nid, "env", "-i", "bash", "-c", "ls -d /tmp/ssh-* 2>/dev/null; "
                            "grep -l SSH_AUTH_SOCK /proc/[0-9]*/environ 2>/dev/null", check=False)
            assert found.stdout == "", found.stdout

        # A rekeyed head-only worker is refused, named, and OpenSSH through the head refuses it too.
        old = key
        sb.rekey(2)
        r = laptop.fab("verify")
        assert r.returncode == 1
        status, detail = rows(r.stdout, "verify")["rental2"]
        assert status == "FAILED" and detail.startswith(f"host key of 198.19.0.12 changed: multinode pinned 256 {old}")
        assert "--reinstalled rental2" in detail and rows(r.stdout, "verify")["rental1"][0] == "ok"
        assert laptop.ssh("rental2", "true").returncode != 0
        r = laptop.fab("hostkeys")
        assert r.returncode == 1 and rows(r.stdout, "hostkeys")["rental2"][0] == "FAILED"
        r = laptop.fab("hostkeys", "--reinstalled", "rental2", "verify")
        assert r.returncode == 0, r.stdout + r.stderr
        assert (laptop.home / "logs/setup_rental2.log").stat().st_size > 0  # its own log, as every node's

        # Given back through the head too: its secrets proven gone, its pin forgotten.
        r = laptop.fab("teardown", "--yes", timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert rows(r.stdout, "teardown")["rental2"][0] in ("ok", "changed")
        assert "198.19.0.12" not in (laptop.home / ".config/multinode/pins.json").read_text()
    finally:
        os.kill(agent_pid, signal.SIGTERM)
        sb.hide(2, False)
