"""Unit tests: editing known_hosts text (no network)."""

import paramiko
from paramiko.hostkeys import HostKeys

from multinode.sshfiles import fingerprint
from multinode.sshfiles import entry_line, update_known_hosts



def _key():
    # Fresh keys per call; ECDSA generation is built into paramiko.
    return paramiko.ECDSAKey.generate()


def test_new_host_is_appended_and_second_run_changes_nothing():
    key = _key()
    text, changed = update_known_hosts("other ssh-ed25519 AAAA\n", {"198.18.0.10": key})
    assert changed == {"198.18.0.10": True}
    assert text == "other ssh-ed25519 AAAA\n" + entry_line("198.18.0.10", key)
    again, changed = update_known_hosts(text, {"198.18.0.10": key})
    assert again == text and changed == {"198.18.0.10": False}


def test_stale_entries_go_user_lines_stay_byte_for_byte():
    key, old = _key(), _key()
    hashed = HostKeys.hash_host("198.18.0.10")
    user = (
        "# my hosts\n"
        "gitlab.example,203.0.113.9 ssh-ed25519 AAAAuser1   trailing-comment\n"
        f"{hashed} {old.get_name()} {old.get_base64()}\n"
        "@cert-authority *.corp ssh-ed25519 AAAAca\n"
        f"198.18.0.10,keepme.example {old.get_name()} {old.get_base64()}\n"
        f"[198.18.0.10]:2222 {old.get_name()} {old.get_base64()}\n"
        "last ssh-rsa AAAAno-newline"
    )
    text, changed = update_known_hosts(user, {"198.18.0.10": key})
    assert changed == {"198.18.0.10": True}
    assert text.splitlines() == [
        "# my hosts",
        "gitlab.example,203.0.113.9 ssh-ed25519 AAAAuser1   trailing-comment",
        "@cert-authority *.corp ssh-ed25519 AAAAca",
        f"keepme.example {old.get_name()} {old.get_base64()}",
        f"[198.18.0.10]:2222 {old.get_name()} {old.get_base64()}",  # another port: another host
        "last ssh-rsa AAAAno-newline",
        entry_line("198.18.0.10", key).rstrip("\n"),
    ]


def test_unchanged_host_keeps_its_place_while_another_is_replaced():
    a, b, b2 = _key(), _key(), _key()
    text = entry_line("198.18.0.10", a) + "mine ssh-ed25519 AAAA\n" + entry_line("[198.18.0.11]:2222", b)
    new, changed = update_known_hosts(text, {"198.18.0.10": a, "[198.18.0.11]:2222": b2})
    assert changed == {"198.18.0.10": False, "[198.18.0.11]:2222": True}
    assert new == entry_line("198.18.0.10", a) + "mine ssh-ed25519 AAAA\n" + entry_line("[198.18.0.11]:2222", b2)


def test_key_types_openssh_added_are_the_same_host_a_changed_key_is_not():
    key, other = _key(), _key()  # ECDSA keys
    ours = entry_line("198.18.0.10", key)
    # After `ssh rental0`, OpenSSH (UpdateHostKeys) appends the node's other host keys, hashed.
    text = (ours + f"{HostKeys.hash_host('198.18.0.10')} ssh-rsa AAAArsa\n"
            + f"{HostKeys.hash_host('198.18.0.10')} ssh-ed25519 AAAAed25519\n")
    new, changed = update_known_hosts(text, {"198.18.0.10": key})
    assert (new, changed) == (text, {"198.18.0.10": False})
    # Another key of the same type: a changed machine, all its entries replaced.
    new, changed = update_known_hosts(text, {"198.18.0.10": other})
    assert changed == {"198.18.0.10": True} and new == entry_line("198.18.0.10", other)
    # Two keys of one type recorded, one of them current: the stale one goes.
    both = ours + f"198.18.0.10 {key.get_name()} {other.get_base64()}\n"
    new, changed = update_known_hosts(both, {"198.18.0.10": key})
    assert changed == {"198.18.0.10": True} and new == ours


def test_fingerprint_matches_ssh_keygen(tmp_path):
    import subprocess

    key = paramiko.Ed25519Key.from_private_key_file
    path = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    loaded = key(str(path))
    out = subprocess.run(["ssh-keygen", "-lf", f"{path}.pub"], capture_output=True, text=True, check=True).stdout
    bits, fp, *_, kind = out.split()
    assert fingerprint(loaded) == f"{bits} {fp} {kind}"


def test_head_ssh_finds_the_laptops_key_in_a_hashed_entry(tmp_path):
    from multinode.sshfiles import verified_keys
    from multinode.inventory import parse_hosts

    key, other, second = _key(), _key(), _key()
    path = tmp_path / "known_hosts"
    path.write_text(f"{HostKeys.hash_host('198.18.0.11')} {key.get_name()} {key.get_base64()}\n"
                    f"[198.18.0.12]:2222 {other.get_name()} {other.get_base64()}\n"
                    f"198.18.0.12 {key.get_name()} {key.get_base64()}\n"
                    f"[198.18.0.12]:2222,198.18.0.99 {second.get_name()} {second.get_base64()}\n")
    nodes = parse_hosts("198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.11,198.18.0.12:2222:198.19.0.12")
    keys = verified_keys(path, nodes)
    assert set(keys) == {"rental1", "rental2"}  # rental0: none, left out
    assert [k.get_base64() for k in keys["rental1"]] == [key.get_base64()]
    # every key recorded for that address and port, and only those
    assert [k.get_base64() for k in keys["rental2"]] == [other.get_base64(), second.get_base64()]
    # Of several types (OpenSSH adds them after a plain ssh): the best type only, so the head's file stays.
    ed = paramiko.Ed25519Key.from_private_key_file
    import subprocess
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "ed")], check=True)
    ed25519 = ed(str(tmp_path / "ed"))
    with open(path, "a") as fh:
        fh.write(f"198.18.0.11 {ed25519.get_name()} {ed25519.get_base64()}\n")
    assert [k.get_base64() for k in verified_keys(path, nodes)["rental1"]] == [ed25519.get_base64()]


def test_damaged_lines_are_skipped_by_every_reader(tmp_path):
    from multinode.sshfiles import verified_keys
    from multinode.inventory import parse_hosts

    key = _key()
    path = tmp_path / "known_hosts"
    good = entry_line("198.18.0.11", key)
    path.write_text("|1|not-base64!|junk ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOmnG0gOD8rK2vS0Oa9lF+8tLPl8RjCxsKx0w1mA0Tzd\n"
                    "198.18.0.11 ssh-ed25519 AAAA!!!notbase64\n|1|\n" + good)
    nodes = parse_hosts("198.18.0.10:198.19.0.10,198.18.0.11:198.19.0.11")
    assert [k.get_base64() for k in verified_keys(path, nodes)["rental1"]] == [key.get_base64()]
    text, changed = update_known_hosts(path.read_text(), {"198.18.0.11": key})
    assert changed == {"198.18.0.11": False}


def test_pins_of_names_head_only_workers_and_a_jump_host(tmp_path):
    import json

    import pytest

    from multinode.inventory import BadInput, parse_hosts, parse_jump
    from multinode.pins import Pins

    state = tmp_path / "cluster.json"
    head, worker = parse_hosts("gpu0.example:10.0.0.7,:10.0.0.8")
    worker.via = head.address
    jump = parse_jump("admin@bastion.example:2200")
    keys = {n.alias: _key() for n in (head, worker, jump)}
    pins = Pins.load(state, tmp_path / "known_hosts")
    pins.pin([(n, keys[n.alias]) for n in (head, worker, jump)])
    again = Pins.load(state, tmp_path / "known_hosts")
    assert {n.alias: again.get(n) for n in (head, worker, jump)} == {
        alias: f"{k.get_name()} {k.get_base64()}" for alias, k in keys.items()}
    assert [p.address for p in again.pins] == ["gpu0.example", "10.0.0.8", "[bastion.example]:2200"]
    # The same private address behind another head is another machine: not pinned.
    other = parse_hosts("gpu9.example:10.0.0.7,:10.0.0.8")[1]
    other.via = "gpu9.example"
    assert again.get(other) is None
    path = tmp_path / "pins.json"
    data = json.loads(path.read_text())
    assert data["pins"][1]["via"] == "gpu0.example" and "via" not in data["pins"][0]
    del data["pins"][1]["via"]  # a head-only worker's pin without its head: refused, not guessed
    path.write_text(json.dumps(data))
    with pytest.raises(BadInput, match="pin #1: not a machine"):
        Pins.load(state, tmp_path / "known_hosts")
