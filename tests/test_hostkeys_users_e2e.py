"""End to end: the real fab CLI on the laptop against real sshd nodes.

Done-when of the foundation issue: hostkeys + detect-user on 3 nodes, strict
host keys afterwards, a rekeyed node refused alone, a stopped or dead node
failing alone and in time, the user's files kept byte for byte, idempotence.
"""

import json
import re

import pytest

from multinode.sandbox.cluster import LAPTOP_IP
from tests.conftest import ROOT, USERS


def accepted(sandbox, nid):
    """How many SSH logins from the laptop node ``nid``'s sshd has accepted so far."""
    return len(re.findall(rf"Accepted publickey for \S+ from {re.escape(LAPTOP_IP)} ", sandbox.sshd_log(nid)))


def rows(out, task):
    """{alias: (status, detail)} from fab's per-node lines of one task."""
    found = {}
    for line in out.splitlines():
        m = re.match(rf"{task}\s+(\S+)\s+\S+\s+(ok|changed|FAILED|skipped)\s*(.*)", line)
        if m:
            found[m.group(1)] = (m.group(2), m.group(3))
    return found


def test_hostkeys_detect_user_then_strict_ssh(laptop, healthy):
    sb = healthy
    before = [accepted(sb, n) for n in range(3)]
    r = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user")
    assert r.returncode == 0, r.stdout + r.stderr
    assert rows(r.stdout, "detect-user") == {
        "rental0": ("ok", "user ubuntu"), "rental1": ("ok", "user user"), "rental2": ("ok", "user ubuntu"),
    }
    # The printed fingerprint is the node's, as ssh-keygen -lf shows it.
    keygen = sb.exec(0, "ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()
    assert rows(r.stdout, "hostkeys")["rental0"] == ("changed", f"recorded {keygen[0]} {keygen[1]} {keygen[-1]}")
    # One authenticated connection per node for the whole invocation.
    assert [accepted(sb, n) - before[n] for n in range(3)] == [1, 1, 1]
    who = laptop.ssh("rental1", "whoami")
    assert (who.returncode, who.stdout) == (0, "user\n"), who.stderr
    state = json.loads((laptop.home / ".config/multinode/cluster.json").read_text())
    assert [(n["alias"], n["user"], n["private"]) for n in state["nodes"]] == [
        (f"rental{i}", USERS[i], sb.nodes[i]["private"]) for i in range(3)
    ]

    # A second identical run changes no file at all.
    snap = laptop.snapshot()
    again = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user")
    assert again.returncode == 0, again.stdout + again.stderr
    assert {s for s, _ in rows(again.stdout, "hostkeys").values()} == {"ok"}
    assert laptop.snapshot() == snap

    # The cluster is remembered: no -H needed; chained tasks share one connection.
    before = [accepted(sb, n) for n in range(3)]
    r = laptop.fab("detect-user", "detect-user")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(rows(r.stdout, "detect-user")) == 3
    assert [accepted(sb, n) - before[n] for n in range(3)] == [1, 1, 1]


def test_rekeyed_node_is_refused_alone_until_the_user_says_it_was_reinstalled(laptop, healthy):
    sb = healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys", "detect-user").returncode == 0
    old = sb.exec(2, "ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
    sb.rekey(2)
    new = sb.exec(2, "ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
    r = laptop.fab("detect-user")
    assert r.returncode == 1
    got = rows(r.stdout, "detect-user")
    assert got["rental0"][0] == got["rental1"][0] == "ok"
    assert got["rental2"][0] == "FAILED"
    assert "changed" in got["rental2"][1] and old in got["rental2"][1] and new in got["rental2"][1]
    assert "fab hostkeys --reinstalled rental2" in got["rental2"][1]
    assert "rental2" in r.stdout.split("failed:")[-1]
    assert laptop.ssh("rental2", "true").returncode != 0  # OpenSSH refuses it too

    # hostkeys itself keeps the pin: the changed key is refused, not recorded.
    known = (laptop.home / ".ssh/known_hosts").read_text()
    r = laptop.fab("hostkeys", "detect-user")
    assert r.returncode == 1
    status, detail = rows(r.stdout, "hostkeys")["rental2"]
    assert status == "FAILED" and old in detail and new in detail and "--reinstalled rental2" in detail
    assert rows(r.stdout, "detect-user")["rental2"] == ("skipped", "failed earlier in hostkeys")
    assert (laptop.home / ".ssh/known_hosts").read_text() == known

    bad = laptop.fab("hostkeys", "--reinstalled", "rental7")
    assert bad.returncode == 2 and "bad --reinstalled 'rental7'" in bad.stderr

    r = laptop.fab("hostkeys", "--reinstalled", "rental2", "detect-user")
    assert r.returncode == 0, r.stdout + r.stderr
    status, detail = rows(r.stdout, "hostkeys")["rental2"]
    assert status == "changed" and detail.startswith(f"recorded 256 {new}") and f"(replaced 256 {old}" in detail
    assert laptop.ssh("rental2", "hostname").stdout == "node2\n"

    # An address that is not a machine of the remembered cluster (a new rental on a recycled
    # address): its key is recorded, the old one shown as replaced.
    sb.rekey(2)
    newer = sb.exec(2, "ssh-keygen", "-lf", "/etc/ssh/ssh_host_ed25519_key.pub").stdout.split()[1]
    r = laptop.fab("-H", f"{sb.nodes[2]['public']}:198.19.0.99", "hostkeys")
    assert r.returncode == 0, r.stdout + r.stderr
    status, detail = rows(r.stdout, "hostkeys")["rental0"]
    # Replaced: ours, and the RSA and ECDSA keys OpenSSH recorded after the plain `ssh rental2` above.
    assert status == "changed" and detail.startswith(f"recorded 256 {newer} (ED25519) (replaced 256 {new} (ED25519), ")


def test_a_damaged_known_hosts_line_is_skipped(laptop, healthy):
    sb = healthy
    ssh = laptop.home / ".ssh"
    damaged = ("|1|not-base64!|junk ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmnG0gOD8rK2vS0Oa9lF+8tLPl8RjCxsKx0w1mA0Tzd\n"
               "198.18.0.99 ssh-ed25519 AAAA!!!notbase64\n|1|\n")
    (ssh / "known_hosts").write_text(damaged)
    r = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (ssh / "known_hosts").read_text().startswith(damaged)  # left as it was, as ssh-keygen -F leaves it


def test_stopped_sshd_fails_alone_and_later_tasks_skip_it(laptop, healthy):
    sb = healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys").returncode == 0
    sb.stop_sshd(1)
    r = laptop.fab("hostkeys", "detect-user")
    assert r.returncode == 1
    assert rows(r.stdout, "hostkeys")["rental1"][0] == "FAILED"
    assert "connection refused by 198.18.0.11" in rows(r.stdout, "hostkeys")["rental1"][1]
    assert rows(r.stdout, "detect-user") == {
        "rental1": ("skipped", "failed earlier in hostkeys"),
        "rental0": ("ok", "user ubuntu"), "rental2": ("ok", "user ubuntu"),
    }
    assert re.search(r"2 of 3 node\(s\) ok; failed:\n\s+rental1\s+198\.18\.0\.11\s+hostkeys: connection refused", r.stdout)


def test_dead_node_fails_within_the_connect_timeout(laptop, healthy):
    sb = healthy
    assert laptop.fab("-H", sb.hosts, "hostkeys").returncode == 0
    sb.exec(2, "ip", "link", "set", "eth0", "down")  # the machine stops answering at all
    r = laptop.fab("-t", "2", "hostkeys", "detect-user", timeout=30)
    assert r.returncode == 1
    reason = rows(r.stdout, "hostkeys")["rental2"]
    assert reason[0] == "FAILED" and ("timed out after 2s" in reason[1] or "cannot reach" in reason[1])
    assert rows(r.stdout, "detect-user")["rental0"] == ("ok", "user ubuntu")


def test_users_own_ssh_files_survive_byte_for_byte(laptop, healthy):
    sb = healthy
    ssh = laptop.home / ".ssh"
    user_config = "ServerAliveInterval 30\n\nHost *.corp\n\tUser alice\n  # a comment\nHost *\n    User root"
    (ssh / "config").write_text(user_config)
    stale = "198.18.0.10 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmnG0gOD8rK2vS0Oa9lF+8tLPl8RjCxsKx0w1mA0Tzd\n"
    mine = "# my machines\ngitlab.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0x   with comment\n"
    (ssh / "known_hosts").write_text(mine + stale + "@revoked * ssh-rsa AAAAB3Nza\n")
    r = laptop.fab("-H", sb.hosts, "hostkeys", "detect-user")
    assert r.returncode == 0, r.stdout + r.stderr
    config = (ssh / "config").read_text()
    block = config[: config.index("# END multinode\n") + len("# END multinode\n")]
    assert config == block + "\n" + user_config  # the user's part: byte for byte
    assert (ssh / "config.multinode.bak").read_text() == user_config
    assert oct((ssh / "config").stat().st_mode & 0o777) == "0o600"
    known = (ssh / "known_hosts").read_text()
    assert known.startswith(mine + "@revoked * ssh-rsa AAAAB3Nza\n") and stale not in known
    assert (ssh / "known_hosts.multinode.bak").read_text() == mine + stale + "@revoked * ssh-rsa AAAAB3Nza\n"
    # Our Host entries come first, so the user's "Host * / User root" does not win.
    assert laptop.ssh("rental1", "whoami").stdout == "user\n"


def test_explicit_user_and_port_from_a_pasted_table(laptop, healthy):
    sb = healthy
    n = sb.nodes
    table = (
        "Public IP           Private IP\n"
        f"ubuntu@{n[0]['public']}:2222   {n[0]['private']}\n"
        f"{n[1]['public']}   {n[1]['private']}\n"
    )
    r = laptop.fab("-H", "-", "hostkeys", "detect-user", stdin=table)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"[{n[0]['public']}]:2222 " in (laptop.home / ".ssh/known_hosts").read_text()
    assert "    Port 2222\n" in (laptop.home / ".ssh/config").read_text()
    assert laptop.ssh("rental0", "whoami").stdout == "ubuntu\n"
    # An explicit user is the only one tried.
    bad = laptop.fab("-H", f"user@{n[0]['public']}:{n[0]['private']}", "hostkeys", "detect-user")
    assert bad.returncode == 1 and "no login user worked (tried user " in bad.stdout


def test_no_user_works(laptop, healthy):
    r = laptop.fab("-H", healthy.hosts, "hostkeys", "detect-user", "--users", "admin,ec2-user")
    assert r.returncode == 1
    assert all(s == "FAILED" and "tried admin, ec2-user" in d for s, d in rows(r.stdout, "detect-user").values())


BAD_CLI = [
    (["-H", "198.18.0.10", "hostkeys"], "'198.18.0.10'"),
    (["-H", "198.18.0.10:198.19.0.999", "hostkeys", "detect-user"], "'198.19.0.999'"),
    (["-H", "198.18.0.10:198.19.0.10,198.18.0.10:198.19.0.11", "detect-user"], "duplicate public address '198.18.0.10'"),
    (["-H", "198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.10", "hostkeys"], "duplicate private address '198.19.0.10'"),
    (["-H", "198.18.0.10:198.19.0.10;touch /tmp/x", "hostkeys"], "'198.18.0.10:198.19.0.10;touch /tmp/x'"),
    (["-H", "ubuntu@198.18.0.10:99999:198.19.0.10", "hostkeys"], "'99999'"),
    (["-H", "Bad@198.18.0.10:198.19.0.10", "hostkeys"], "'Bad'"),
    (["-H", "198.18.0.10:198.19.0.10,", "hostkeys"], "empty node"),
    (["-H", "@/nonexistent/nodes.txt", "hostkeys"], "'/nonexistent/nodes.txt'"),
    (["hostkeys"], "no cluster given"),
    (["-H", "198.18.0.10:198.19.0.10", "detect-user", "--users", "ubuntu,r$t"], "'r$t'"),
    (["-H", "198.18.0.10:198.19.0.10", "-i", "/nonexistent/key", "detect-user"], "'/nonexistent/key'"),
    # A bad argument of a later task stops the run before the first task writes anything.
    (["-H", "198.18.0.10:198.19.0.10", "detect-user", "tmux", "--nodes", "abc"], "bad --nodes 'abc'"),
    (["-H", "198.18.0.10:198.19.0.10", "hostkeys", "bootstrap", "--tail", "many"], "bad --tail 'many'"),
    (["-H", "198.18.0.10:198.19.0.10", "detect-user", "hostkeys", "--reinstalled", "rental9"], "'rental9'"),
    (["-H", "198.18.0.10:198.19.0.10", "hostkeys", "detect-user", "--users", "ubuntu,Root"], "'Root'"),
    (["-H", "198.18.0.10:198.19.0.10", "setup", "--tail", "-1"], "bad --tail '-1'"),
]


@pytest.mark.parametrize("args,named", BAD_CLI, ids=[" ".join(a) for a, _ in BAD_CLI])
def test_bad_input_exits_2_and_touches_nothing(laptop, sandbox, args, named):
    snap = laptop.snapshot()
    logs = [sandbox.sshd_log(n) for n in range(3)]
    r = laptop.fab(*args)
    assert r.returncode == 2, r.stdout + r.stderr
    assert named in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stdout == ""
    assert laptop.snapshot() == snap
    assert [sandbox.sshd_log(n) for n in range(3)] == logs  # no connection was made


def test_multinode_command_works_outside_the_project(laptop, healthy):
    """The console script carries its executor: no fabric.yaml needed in the working directory."""
    multinode = str(ROOT / ".venv/bin/multinode")
    r = laptop.run(multinode, "-H", healthy.hosts, "hostkeys", "detect-user", cwd="/")
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(rows(r.stdout, "detect-user")) == 3 and "all 3 node(s) ok" in r.stdout
    assert laptop.run(multinode, "--list", cwd="/").stdout.count("sandbox.") == 5


def test_the_users_ssh_config_changes_nothing_about_our_connections(laptop, healthy):
    """A Host * with ForwardAgent, IdentityFile and ProxyJump: no agent reaches a node, no gateway is used."""
    import subprocess

    sb = healthy
    ssh = laptop.home / ".ssh"
    (ssh / "config").write_text("Host *\n    ForwardAgent yes\n    IdentityFile ~/.ssh/nonexistent_key\n"
                                "    ProxyJump 198.18.0.99\n")
    sock = laptop.home / "agent.sock"
    agent = subprocess.Popen(sb.laptop_cmd("ssh-agent", "-D", "-a", str(sock)), stdout=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if sock.exists():
                break
            __import__("time").sleep(0.1)
        laptop.env["SSH_AUTH_SOCK"] = str(sock)
        assert laptop.run("ssh-add", str(ssh / "id_ed25519")).returncode == 0
        laptop.configure(repo={"url": ""}, dotfiles={"repo": ""}, ray={"enabled": False}, log_dir=str(laptop.home / "logs"),
                         installers=sb.forge.config()["installers"],
                         tools=[{"name": "agentprobe", "check": "test -f ~/agent.txt",
                                 "install": "echo ${SSH_AUTH_SOCK:-none} >~/agent.txt"}])
        node = sb.nodes[1]
        r = laptop.fab("-H", f"{node['public']}:{node['private']}", "hostkeys", "detect-user", "bootstrap", timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        assert sb.exec(1, "cat", f"/home/{USERS[1]}/agent.txt").stdout == "none\n"  # no agent forwarded
    finally:
        agent.kill()
        sb.exec(1, "rm", "-f", f"/home/{USERS[1]}/agent.txt")
