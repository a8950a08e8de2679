"""Configuration: every default in one dict, read under the ``multinode`` key.

Override in ``~/.fabric.yaml``, ``/etc/fabric.yaml`` or a project
``fabric.yaml`` (``multinode: {users: [ubuntu, root]}``); CLI flags win.
"""

from pathlib import Path
from types import SimpleNamespace

from .inventory import USER_RE, BadInput, state_path

DEFAULTS = {
    # Login users tried in order by detect-user (an explicit USER@ wins).
    "users": ["ubuntu", "user"],
    # The laptop's private key used to log in to the nodes.
    "identity": "~/.ssh/id_ed25519",
    # Aliases: rental0 (the head), rental1, ...
    "alias_prefix": "rental",
    # Nodes worked on at once.
    "workers": 32,
    # Seconds to wait for a node's TCP connect, SSH banner and authentication.
    "connect_timeout": 10,
    "known_hosts": "~/.ssh/known_hosts",
    "ssh_config": "~/.ssh/config",
    # Where the cluster is remembered; empty: $XDG_CONFIG_HOME/multinode/cluster.json.
    "state": "",
}


def _positive_int(value, key):
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit() or int(value) < 1:
        raise BadInput(f"bad multinode.{key} {value!r}: expected a positive whole number")
    return int(value)


def split_users(value, key="users"):
    """A user list from config (list) or a CLI flag ("ubuntu,user"), validated."""
    users = value.split(",") if isinstance(value, str) else list(value or [])
    users = [u.strip() for u in users]
    if not users:
        raise BadInput(f"bad multinode.{key}: no login user to try")
    for user in users:
        if not USER_RE.match(user):
            raise BadInput(f"bad user name {user!r} in multinode.{key}")
    return users


def settings(config):
    """The validated ``multinode`` settings of an Invoke/Fabric config."""
    raw = dict(DEFAULTS)
    raw.update(config.get("multinode", {}) or {})
    connect = config.get("connect_kwargs", {}) or {}
    identity = connect.get("key_filename") or raw["identity"]  # fab -i wins
    if isinstance(identity, (list, tuple)):
        identity = identity[0]
    timeout = connect.get("timeout") or raw["connect_timeout"]  # fab -t wins
    prefix = str(raw["alias_prefix"])
    if not USER_RE.match(prefix) or prefix[-1].isdigit():
        raise BadInput(f"bad multinode.alias_prefix {prefix!r}: letters, digits, - and _, not ending in a digit")
    return SimpleNamespace(
        users=split_users(raw["users"]),
        identity=Path(str(identity)).expanduser(),
        alias_prefix=prefix,
        workers=_positive_int(raw["workers"], "workers"),
        connect_timeout=_positive_int(timeout, "connect_timeout"),
        known_hosts=Path(str(raw["known_hosts"])).expanduser(),
        ssh_config=Path(str(raw["ssh_config"])).expanduser(),
        state=state_path(raw["state"]),
    )
