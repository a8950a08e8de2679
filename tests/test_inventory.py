"""Unit tests: parsing and validating node lists (no network)."""

import io

import pytest

from multinode.inventory import BadInput, Node, adopt_known_users, load_state, parse_hosts, parse_node, save_state

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
