"""Host key pins: every machine whose key multinode recorded, whatever cluster ran since.

A machine is its (public host, port, private address): the public host as
given (an address, or a DNS name: the pin is kept by the name, as OpenSSH
keeps its known_hosts entry, whatever the name resolves to today). A worker
without a public address is its private address as seen from its head (the
head's address is part of the pin: private addresses repeat across
providers); a jump host is its host and port. Once `hostkeys` records its key,
that key is pinned in ``pins.json`` beside the remembered cluster
(``~/.config/multinode/pins.json``, 0600), for every cluster you have set up
at once: a later ``-H`` of another cluster does not release it. A pinned
machine offering another key is refused, by `hostkeys` and by every login,
until you say it was reinstalled (``--reinstalled``), forget it (``fab
hostkeys --forget ADDR``) or give it back (``teardown``, which says which pins
it forgets). An address whose machine was never pinned, or was given back, is
a new rental: its key is recorded.

Pins older than this file came from the remembered cluster's known_hosts
entries: on first use those are pinned, as multinode pinned them before.
"""

import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from paramiko.hostkeys import HostKeyEntry

from .addresses import address, host, ssh_address
from .sshfiles import best_of, fingerprint, keys_of, known_host_entries
from .inventory import BadInput, load_state
from .localfiles import locked, read_text, write_atomic

@dataclass
class Pin:
    public: str  # "" for a worker reached through its head
    port: int
    private: str  # "" for a jump host
    key: str  # "TYPE BASE64", as known_hosts holds it
    since: str = ""
    via: str = ""  # the head a worker without a public address is reached through

    @property
    def machine(self):
        return (self.public, self.port, self.private, self.via)

    @property
    def address(self):
        return ssh_address(self.public or self.private, self.port)


def pins_path(state):
    """Where the pins live: beside the remembered cluster."""
    return Path(state).with_name("pins.json")


def key_text(key):
    return f"{key.get_name()} {key.get_base64()}"


def as_key(text):
    """A pinned key's text as a paramiko key."""
    return HostKeyEntry.from_line(f"pinned {text}").key


def shown(text):
    """A pinned key as ``ssh-keygen -lf`` shows it."""
    return fingerprint(as_key(text))


def _pin(data, index):
    if not isinstance(data, dict) or set(data) - {"public", "port", "private", "key", "since", "via"}:
        raise ValueError(f"pin #{index}: unexpected fields")
    port = data.get("port")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"pin #{index}: bad port {port!r}")
    public, private, key, via = data.get("public"), data.get("private"), data.get("key"), data.get("via", "")
    if not all(isinstance(v, str) for v in (public, private, key, via)):
        raise ValueError(f"pin #{index}: addresses and key must be text")
    what = f"pin #{index}"
    canonical = (host(public, "public", what) if public else "", address(private, "private", what) if private else "")
    if canonical != (public, private) or not (public or private) or bool(via) == bool(public) \
            or not re.fullmatch(r"[a-z0-9.:\[\]-]*", via):
        raise ValueError(f"{what}: not a machine (public {public!r}, private {private!r}, via {via!r})")
    try:
        as_key(key)
    except Exception:  # noqa: BLE001  any damage: not a key
        raise ValueError(f"{what}: not a host key") from None
    return Pin(public, port, private, key, str(data.get("since", "")), via)


class Pins:
    """The pin history (see the module's docstring). Read once per run; changed under a lock."""

    def __init__(self, path, pins):
        self.path, self.pins = Path(path), pins

    @classmethod
    def load(cls, state, known_hosts):
        path = pins_path(state)
        text = read_text(path)
        if not text:
            return cls(path, seeded(state, known_hosts))
        try:
            data = json.loads(text)
            pins = [_pin(p, i) for i, p in enumerate(data["pins"])]
        except (ValueError, KeyError, TypeError, BadInput) as exc:
            raise BadInput(f"cannot read the host key pins {str(path)!r}: {exc}; fix or remove the file "
                           "(removing it forgets every pin)") from None
        return cls(path, pins)

    def get(self, node):
        """The pinned key text of ``node``'s machine, or None."""
        return next((p.key for p in self.pins if p.machine == node.machine), None)

    def save(self, change):
        """Apply ``change(pins)`` (it edits the list) to the file as it is now (another run may
        have changed it), and write it when it changed."""
        with locked(self.path):
            text = read_text(self.path)
            current = [_pin(p, i) for i, p in enumerate(json.loads(text)["pins"])] if text else list(self.pins)
            change(current)
            self.pins = current
            rows = [{k: v for k, v in asdict(p).items() if v or k != "via"} for p in current]  # "via" where set
            write_atomic(self.path, json.dumps({"pins": rows}, indent=2) + "\n", mode=0o600, backup=False)

    def pin(self, nodes_keys):
        """Pin each (node, key) given: the key now recorded for that machine."""
        today = time.strftime("%Y-%m-%d")

        def change(pins):
            for node, key in nodes_keys:
                old = next((p for p in pins if p.machine == node.machine), None)
                if old is not None and old.key == key_text(key):
                    continue
                if old is not None:
                    pins.remove(old)
                pins.append(Pin(node.public, node.port, node.private, key_text(key), today, node.via))

        self.save(change)

    def forget(self, match):
        """Forget every pin ``match(pin)`` holds true for; the pins forgotten."""
        gone = []

        def change(pins):
            gone.extend(p for p in pins if match(p))
            pins[:] = [p for p in pins if not match(p)]

        self.save(change)
        return gone


def seeded(state, known_hosts):
    """The pins multinode kept before this file: the remembered cluster's keys in known_hosts."""
    try:
        remembered = load_state(state) or []
    except BadInput:
        return []
    entries = known_host_entries(Path(known_hosts))
    pins = []
    for node in remembered:
        for key in best_of(keys_of(entries, node.address))[:1]:
            if node.public:  # pins before this file: nodes with a public address only
                pins.append(Pin(node.public, node.port, node.private, key_text(key)))
    return pins
