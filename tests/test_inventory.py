"""Unit tests: parsing and validating node lists (no network)."""

import io
import json
import re

import pytest

from multinode.inventory import (BadInput, Node, adopt_known_users, load_state, parse_hosts, parse_jump, parse_node,
                                 save_state)

# Strings only: these addresses are parsed, never connected to.


def test_public_private_pair():
    node = parse_node("198.18.0.10:198.19.0.10", 0)
    assert (node.alias, node.public, node.private, node.port, node.user) == ("rental0", "198.18.0.10", "198.19.0.10", 22, None)
    assert node.address == "198.18.0.10"


def test_user_and_port():
    node = parse_node("root@203.0.113.7:40022:10.0.0.7", 3)
    assert (node.user, node.explicit_user, node.port, node.alias) == ("root", True, 40022, "rental3")
    assert node.address == "[203.0.113.7]:40022"


def test_ipv6_public_in_brackets():
    node = parse_node("[2001:db8::5]:2222:198.19.0.5")
    assert (node.public, node.port, node.private) == ("2001:db8::5", 2222, "198.19.0.5")
    assert node.address == "[2001:db8::5]:2222"
    assert parse_node("[2001:DB8::5]:10.1.2.3").address == "2001:db8::5"


def test_head_is_first_and_aliases_follow_order():
    nodes = parse_hosts("198.18.0.12:198.19.0.12,198.18.0.10:198.19.0.10")
    assert [(n.alias, n.public) for n in nodes] == [("rental0", "198.18.0.12"), ("rental1", "198.18.0.10")]


def test_pasted_table_from_stdin_with_header_and_comments():
    table = """
    Public IP        Private IP
    # head first
    198.18.0.10      198.19.0.10
    user@198.18.0.11:2222   198.19.0.11
    198.18.0.12:198.19.0.12
    """
    nodes = parse_hosts("-", stdin=io.StringIO(table))
    assert [(n.public, n.private, n.port, n.user) for n in nodes] == [
        ("198.18.0.10", "198.19.0.10", 22, None),
        ("198.18.0.11", "198.19.0.11", 2222, "user"),
        ("198.18.0.12", "198.19.0.12", 22, None),
    ]


def test_table_from_file(tmp_path):
    path = tmp_path / "nodes.txt"
    path.write_text("IPv4 public\tprivate\n198.18.0.10\t198.19.0.10\n")
    assert [n.public for n in parse_hosts(f"@{path}")] == ["198.18.0.10"]


BAD = [
    ("198.18.0.10", "'198.18.0.10'", "missing private"),
    ("198.18.0.10:", "''", "private"),
    ("198.18.0.300:198.19.0.10", "'198.18.0.300'", "public"),
    ("198.18.0.10:198.19.0.256", "'198.19.0.256'", "private"),
    ("host_x.example:198.19.0.10", "'host_x.example'", "public"),
    ("-oProxyCommand.example:198.19.0.10", "'-oProxyCommand.example'", "not a DNS name"),
    ("a..example:198.19.0.10", "'a..example'", "not a DNS name"),
    ("198.18.0.256:198.19.0.10", "'198.18.0.256'", "public address"),
    ("host.example:node1.example", "'node1.example'", "private address"),
    (":198.19.0.10", "':198.19.0.10'", "the head (the first node) needs a public address"),
    ("198.18.0.10:198.19.0.10,:198.19.0.10", "'198.19.0.10'", "duplicate private"),
    ("198.19.0.11:198.19.0.10,:198.19.0.11", "'198.19.0.11'", "duplicate address"),
    ("host.example:198.19.0.10,HOST.example:198.19.0.11", "'host.example'", "duplicate public"),
    ("198.18.0.10:198.19.0.10,198.18.0.10:198.19.0.11", "'198.18.0.10'", "duplicate public"),
    ("198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.10", "'198.19.0.10'", "duplicate private"),
    ("198.18.0.10;reboot:198.19.0.10", "';'", "not allowed"),
    ("198.18.0.10 :198.19.0.10", "' '", "not allowed"),
    ("$(id)@198.18.0.10:198.19.0.10", "'$()'", "not allowed"),
    ("198.18.0.10:0:198.19.0.10", "'0'", "port"),
    ("198.18.0.10:65536:198.19.0.10", "'65536'", "port"),
    ("198.18.0.10:ssh:198.19.0.10", "'ssh'", "port"),
    ("9user@198.18.0.10:198.19.0.10", "'9user'", "user name"),
    ("Ubuntu@198.18.0.10:198.19.0.10", "'Ubuntu'", "user name"),
    ("198.18.0.10:198.19.0.10,", "empty node", ""),
    ("2001:db8::5:198.19.0.10", "brackets", ""),
    ("[198.18.0.10]:198.19.0.10", "'198.18.0.10'", "IPv6 only"),
    ("1.2.3.4:2:3:4", "'1.2.3.4:2:3:4'", ""),
    ("0.0.0.0:198.19.0.10", "'0.0.0.0'", "unspecified"),
    ("127.0.0.1:198.19.0.10", "'127.0.0.1'", "loopback"),
    ("198.18.0.10:127.0.1.1", "'127.0.1.1'", "loopback"),
    ("224.0.0.1:198.19.0.10", "'224.0.0.1'", "multicast"),
    ("255.255.255.255:198.19.0.10", "'255.255.255.255'", "broadcast"),
    ("[::1]:198.19.0.10", "'::1'", "loopback"),
    ("[::]:198.19.0.10", "'::'", "unspecified"),
    ("[2001:db8::5]:[fd00::5]", "'fd00::5'", "IPv6 private networks are not supported"),
]


@pytest.mark.parametrize("hosts,named,why", BAD)
def test_bad_input_is_refused_naming_the_value(hosts, named, why):
    with pytest.raises(BadInput) as err:
        parse_hosts(hosts)
    message = str(err.value)
    assert named in message and why in message and "\n" not in message


def test_empty_and_unreadable_lists():
    with pytest.raises(BadInput, match="no nodes"):
        parse_hosts("-", stdin=io.StringIO("Public IP  Private IP\n"))
    with pytest.raises(BadInput, match="'/nonexistent/nodes.txt'"):
        parse_hosts("@/nonexistent/nodes.txt")
    with pytest.raises(BadInput, match="expected PUBLIC"):
        parse_hosts("-", stdin=io.StringIO("198.18.0.10 198.19.0.10 extra\n"))


def test_state_round_trip_and_users_adopted_only_for_same_machine(tmp_path):
    path = tmp_path / "cluster.json"
    old = parse_hosts("198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.11")
    old[0].user, old[1].user = "ubuntu", "user"
    assert save_state(path, old) is True
    assert save_state(path, old) is False  # unchanged: not rewritten
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    loaded = load_state(path)
    assert loaded == old and isinstance(loaded[0], Node)
    new = parse_hosts("198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.99")
    adopt_known_users(new, loaded)
    assert [n.user for n in new] == ["ubuntu", None]


# -- names, workers without a public address, provider ssh lines, the jump host (issue 25) ----------


def test_dns_names_are_kept_lowercase_and_pinned_as_openssh_names_them():
    head, worker = parse_hosts("Head.Example.com:10.0.0.7,root@ssh5.vast.ai:41234:10.0.0.8")
    assert (head.public, head.address, head.target) == ("head.example.com", "head.example.com", "head.example.com")
    assert (worker.public, worker.port, worker.address) == ("ssh5.vast.ai", 41234, "[ssh5.vast.ai]:41234")
    assert parse_node("gpubox:10.0.0.9").public == "gpubox"  # a name of one label (a hosts file's)
    worker.resolved = "203.0.113.8"  # for one run: where connections go, never what is pinned or remembered
    assert worker.target == "203.0.113.8" and worker.machine == ("ssh5.vast.ai", 41234, "10.0.0.8", "")


def test_workers_without_a_public_address_are_reached_through_the_head():
    nodes = parse_hosts("203.0.113.7:10.0.0.7,:10.0.0.8,ubuntu@:2222:10.0.0.9")
    assert [(n.head_only, n.public, n.host, n.address, n.user) for n in nodes] == [
        (False, "203.0.113.7", "203.0.113.7", "203.0.113.7", None),
        (True, "", "10.0.0.8", "10.0.0.8", None),
        (True, "", "10.0.0.9", "[10.0.0.9]:2222", "ubuntu"),
    ]


def test_a_pasted_provider_ssh_command_line_with_the_private_address_beside_it():
    table = """SSH command                                           Private IP
    ssh -p 41234 root@ssh5.vast.ai -L 8080:localhost:8080   10.0.0.7
    ssh -A -l ubuntu -p2222 gpu1.example.com                10.0.0.8
    ssh://user@[2001:db8::9]:2200                           10.0.0.9
    :10.0.0.10
    """
    nodes = parse_hosts("-", stdin=io.StringIO(table))
    assert [(n.user, n.public, n.port, n.private) for n in nodes] == [
        ("root", "ssh5.vast.ai", 41234, "10.0.0.7"), ("ubuntu", "gpu1.example.com", 2222, "10.0.0.8"),
        ("user", "2001:db8::9", 2200, "10.0.0.9"), (None, "", 22, "10.0.0.10")]


BAD_LINES = [
    ("ssh -J bastion root@a.example 10.0.0.7", "ssh option '-J'"),
    ("ssh -o ProxyCommand=sh root@a.example 10.0.0.7", "ssh option '-o'"),
    ("ssh -p 41234 root@a.example", "the last column, 'root@a.example', must be the node's private address"),
    ("ssh root@a.example b.example 10.0.0.7", "two destinations"),
    ("ssh -l root user@a.example 10.0.0.7", "two users"),
    ("ssh -p 22 'a;b' 10.0.0.7", "not allowed"),
    ("ssh -p x root@a.example 10.0.0.7", "bad port 'x'"),
    ("ssh -p 22 -- 10.0.0.7", "ssh option '--'"),
    ("ssh root@a.example", "expected the private address"),
]


@pytest.mark.parametrize("line,why", BAD_LINES)
def test_a_pasted_ssh_line_is_read_or_refused_naming_it(line, why):
    with pytest.raises(BadInput) as err:
        parse_hosts("-", stdin=io.StringIO("203.0.113.7 10.0.0.1\n" + line + "\n"))
    assert why in str(err.value) and "\n" not in str(err.value)


def test_the_jump_host():
    jump = parse_jump("admin@Bastion.Example.com:2200")
    assert (jump.alias, jump.public, jump.port, jump.user, jump.private) == (
        "rental-jump", "bastion.example.com", 2200, "admin", "")
    assert jump.spec == "admin@bastion.example.com:2200" and jump.address == "[bastion.example.com]:2200"
    assert parse_jump("[2001:db8::1]").spec == "[2001:db8::1]:22" and parse_jump("") is None
    for bad, why in [("-oProxyCommand=x", "'='"), ("a:b:c", "expected [USER@]HOST[:PORT]"), ("Root@b.example", "user"),
                     ("127.0.0.1", "loopback"), ("b.example:0", "port"), ("@b.example", "user name ''")]:
        with pytest.raises(BadInput, match=re.escape(why)):
            parse_jump(bad)


def test_names_resolved_on_the_laptop_and_refused_when_they_point_nowhere_or_home(monkeypatch):
    import socket

    from multinode.reach import resolve_names

    answers = {"head.example": "203.0.113.7", "home.example": "127.0.0.1", "v6.example": "fe80::1%eth0"}

    def getaddrinfo(name, port, *args, **kwargs):
        if name not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = socket.AF_INET6 if ":" in answers[name] else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (answers[name], port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    nodes = parse_hosts("head.example:10.0.0.7,203.0.113.8:10.0.0.8,:10.0.0.9")
    assert resolve_names(nodes, None) == ["rental0 head.example is 203.0.113.7"]
    assert [n.target for n in nodes] == ["203.0.113.7", "203.0.113.8", "10.0.0.9"]
    for name, why in [("gone.example", "rental1: name 'gone.example' does not resolve on this laptop (Name or service "
                                       "not known)"),
                      ("home.example", "rental1: name 'home.example' resolves to 127.0.0.1: loopback, not a machine's"),
                      ("v6.example", "rental1: name 'v6.example' resolves to fe80::1: link-local")]:
        with pytest.raises(BadInput, match=re.escape(why)):
            resolve_names(parse_hosts(f"head.example:10.0.0.7,{name}:10.0.0.8"), None)
    with pytest.raises(BadInput, match="rental-jump: name 'gone.example'"):
        resolve_names([], parse_jump("gone.example"))


def test_the_remembered_cluster_keeps_names_head_only_workers_and_its_jump_host(tmp_path):
    from multinode.inventory import load_cluster

    path = tmp_path / "cluster.json"
    nodes = parse_hosts("head.example:10.0.0.7,:2222:10.0.0.8")
    nodes[0].resolved = "203.0.113.7"
    save_state(path, nodes, parse_jump("admin@bastion.example"))
    data = json.loads(path.read_text())
    assert data["jump"] == "admin@bastion.example:22" and "resolved" not in data["nodes"][0]
    loaded, jump = load_cluster(path)
    assert loaded == nodes and jump.spec == "admin@bastion.example:22"
    for change, why in [(lambda d: d["nodes"][0].update(public="Head.example"), "canonical"),
                        (lambda d: d["nodes"][0].update(public="-oProxyCommand.x"), "not a DNS name"),
                        (lambda d: d["nodes"][0].update(public=""), "the head (the first node) needs a public address"),
                        (lambda d: d.update(jump="a@b.example:22\nHost *"), "not allowed"),
                        (lambda d: d.update(jump="b.example"), "canonical"),
                        (lambda d: d.update(extra=1), "expected")]:
        damaged = json.loads(json.dumps(data))
        change(damaged)
        path.write_text(json.dumps(damaged))
        with pytest.raises(BadInput, match=re.escape(why)):
            load_cluster(path)


def test_the_remembered_cluster_notes_its_failed_nodes_and_the_machines_leaving_it(tmp_path):
    from multinode.inventory import load_cluster

    def load_notes(path):
        return load_cluster(path, notes=True)[2:]

    path = tmp_path / "cluster.json"
    assert load_cluster(path, notes=True) == (None, None, [], [])  # no remembered cluster
    nodes = parse_hosts("203.0.113.7:10.0.0.7,203.0.113.8:10.0.0.8")
    old = parse_node("203.0.113.9:2222:10.0.0.9", 1)  # the machine rental1 had before a replace
    save_state(path, nodes, failed=[1, 1], leaving=[old])
    data = json.loads(path.read_text())
    assert data["failed"] == [1] and data["leaving"][0]["port"] == 2222
    failed, leaving = load_notes(path)
    assert failed == [1] and leaving == [old]
    save_state(path, nodes)
    assert set(json.loads(path.read_text())) == {"nodes"}  # nothing to note: nothing written
    for change, why in [(lambda d: d.update(failed=["rental1"]), "not a list of node numbers"),
                        (lambda d: d.update(failed=[True]), "not a list of node numbers"),
                        (lambda d: d.update(leaving={"nid": 1}), "not a list of nodes"),
                        (lambda d: d.update(leaving=[{**data["leaving"][0], "public": "-oProxyCommand=x"}]),
                         "not allowed"),
                        (lambda d: d.update(leaving=[{**data["leaving"][0], "shell": "x"}]), "must have nid")]:
        damaged = json.loads(json.dumps(data))
        change(damaged)
        path.write_text(json.dumps(damaged))
        with pytest.raises(BadInput, match=re.escape(why)):
            load_notes(path)


def test_the_laptops_aliases_for_names_head_only_workers_and_a_jump_host():
    from multinode.sshfiles import ssh_config_block

    nodes = parse_hosts("ubuntu@head.example:10.0.0.7,root@:10.0.0.8")
    block = ssh_config_block(nodes, "/home/me/.ssh/id", parse_jump("admin@bastion.example:2200"), known_hosts=None)
    assert block.split("\n") == [
        "Host rental-jump", "    HostName bastion.example", "    User admin", "    Port 2200",
        "    IdentityFile /home/me/.ssh/id", "    IdentitiesOnly yes",
        "Host rental0", "    HostName head.example", "    User ubuntu", "    IdentityFile /home/me/.ssh/id",
        "    IdentitiesOnly yes", "    ProxyJump rental-jump",
        "Host rental1", "    HostName 10.0.0.8", "    User root", "    IdentityFile /home/me/.ssh/id",
        "    IdentitiesOnly yes", "    ProxyJump rental0",
        "Host *"]
