"""Configuration: every default in one dict, read under the ``multinode`` key.

Override in ``~/.fabric.yaml``, ``/etc/fabric.yaml`` or a project
``fabric.yaml`` (``multinode: {users: [ubuntu, root]}``); CLI flags win.
"""

from pathlib import Path
from types import SimpleNamespace

from . import schema
from .inventory import USER_RE, BadInput, state_path


DEFAULTS = {
    # Login users tried in order by detect-user (an explicit USER@ wins); root last:
    # RunPod and Vast.ai containers log in as root.
    "users": ["ubuntu", "user", "root"],
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
    # The cluster's own SSH key pair is kept beside it (cluster_key).
    "state": "",
    # --- bootstrap ---
    "workspace": "/workspace",
    # The workspace repository: cloned into <workspace>/<name> (name: from the URL).
    "repo": {"url": "", "branch": "main", "name": ""},
    # The venv at <repo>/venv: interpreter for `uv venv --python`, package sources.
    "python": {"version": "python3", "index_url": "", "find_links": "", "no_index": False, "downloads": True},
    # Secrets, read on the laptop from a file named in `files` or else the
    # environment variable of the same name. `env` names go to ~/.env.
    "secrets": {"env": ["ANTHROPIC_API_KEY"], "files": {}, "wandb": "WANDB_API_KEY", "huggingface": "HF_TOKEN"},
    # chezmoi dotfiles; age_key is the laptop's age identity, sent as ~/key.txt.
    # overwrite: a dotfile changed on a node since chezmoi wrote it is replaced
    # (chezmoi apply --force) instead of failing the dotfiles step.
    "dotfiles": {"repo": "", "age_key": "~/key.txt", "overwrite": False},
    # Global git identity on the nodes (no personal default).
    "git": {"name": "", "email": ""},
    # Shell commands that install a missing tool (run as the login user).
    "installers": {
        "uv": "curl -LsSf https://astral.sh/uv/install.sh | env UV_NO_MODIFY_PATH=1 sh",
        "chezmoi": 'sh -c "$(curl -fsLS get.chezmoi.io)" -- -b "$HOME/.local/bin"',
        # as_root: directly as root, else through `sudo -n` (never a password prompt).
        "age": "as_root apt-get install -y -q age",
        "docker": "curl -fsSL https://get.docker.com | as_root sh",
    },
    # Docker: installed when missing, except in a container (no systemd to run its
    # daemon), where the docker step is skipped unless required.
    "docker": {"required": False},
    # Extra tools: each installed (install) when its check fails.
    "tools": [
        {"name": "claude", "check": "command -v claude", "install": "curl -fsSL https://claude.ai/install.sh | bash"},
    ],
    # Multi-node only: every node must reach its peers' private address on this port first.
    # verify's pair probes: each node listens on probe_port a few seconds while its peers connect.
    # bandwidth: each node serves on bandwidth_port; a link below min_gbits (0: no floor) fails.
    "network": {"check_port": 22, "timeout": 5, "probe_port": 40099, "bandwidth_port": 40100, "min_gbits": 0},
    # NCCL/Gloo: the interface is the one carrying the private address; HCAs from sysfs.
    "nccl": {"sysfs_root": "/sys"},
    # Ray (from the workspace venv), in tmux session `ray`; `wait`: seconds for it to join.
    # start_flags go to every `ray start`, head_flags to the head's only;
    # enabled: false leaves Ray out (the ray step is skipped).
    "ray": {"enabled": True, "port": 6379, "start_flags": "", "head_flags": "--include-dashboard=false", "wait": 120},
    # head-ssh: KexAlgorithms of the head's workerK aliases (every tmux pane and proof is one
    # connection). curve25519 is what the laptop's own connections (paramiko) use; OpenSSH's
    # default post-quantum sntrup761 costs the head about 8x the CPU per connection.
    # Empty: OpenSSH's default.
    "head_ssh": {"kex_algorithms": "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256"},
    # GPUs each node must have: count (0: none expected, no GPU row fails) and a model
    # name part ("H100"); verify shows what nvidia-smi reports either way.
    "gpu": {"count": 0, "model": ""},
    # Facts that must match across nodes (gpu, driver, cuda, python, torch, packages):
    # those listed here may differ.
    "consistency": {"ignore": []},
    # smoke: the all-reduce's rendezvous port on the head (rank 0 serves it on the head's private address alone),
    # MiB each rank all-reduces, timed all-reduces, and seconds each part may take.
    "smoke": {"port": 29500, "size_mb": 64, "iters": 10, "timeout": 300},
    # sync: names (or paths) never pushed; --exclude adds to them.
    "sync": {"exclude": [".git", "venv", ".venv", "__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache"]},
    # What setup runs besides its own tasks: the bandwidth ring and the smoke test
    # (off: each takes the network or the GPUs for a while).
    "setup": {"bandwidth": False, "smoke": False},
    # notify: apprise URLs (ntfy://, slack://, json://, mailto://, ...); desktop where possible.
    "notify": {"urls": [], "desktop": True},
    # Seconds a node's bootstrap script may run before the node is failed (a hang
    # costs rented hours); checks (verify, head-ssh, tmux) get check_timeout.
    "script_timeout": 3600,
    "check_timeout": 300,
    # Seconds each bootstrap step may run (step_timeouts: {python: 1800} for one step).
    "step_timeout": 900,
    "step_timeouts": {},
    # Without a terminal: a line per node for every this many seconds a step runs.
    "progress_interval": 30,
    # Local per-node logs: <log_dir>/setup_<alias>.log (0600); lines shown per node.
    # Empty: $XDG_STATE_HOME/multinode/logs (~/.local/state/multinode/logs, 0700).
    "log_dir": "",
    "tail": 100,
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
        if not USER_RE.fullmatch(user):
            raise BadInput(f"bad user name {user!r} in multinode.{key}")
    return users


def plain(value):
    """Invoke's config values as plain dicts and lists."""
    if hasattr(value, "items"):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def checked(config):
    """The whole ``multinode`` key, checked against the schema (`BadInput` on the first problem)."""
    raw = plain(config.get("multinode", {}) or {})
    schema.check(raw)
    return raw


def settings(config):
    """The validated ``multinode`` settings of an Invoke/Fabric config."""
    raw = {**DEFAULTS, **checked(config)}
    connect = config.get("connect_kwargs", {}) or {}
    identity = connect.get("key_filename") or raw["identity"]  # fab -i wins
    if isinstance(identity, (list, tuple)):
        identity = identity[0]
    timeout = connect.get("timeout") or raw["connect_timeout"]  # fab -t wins
    return SimpleNamespace(
        users=split_users(raw["users"]),
        identity=Path(str(identity)).expanduser(),
        alias_prefix=raw["alias_prefix"],
        workers=raw["workers"],
        connect_timeout=_positive_int(timeout, "connect_timeout"),
        known_hosts=Path(str(raw["known_hosts"])).expanduser(),
        ssh_config=Path(str(raw["ssh_config"])).expanduser(),
        state=state_path(raw["state"]),
    )


def options(config):
    """The node tasks' part of the ``multinode`` config, as plain dicts, checked."""
    raw = checked(config)
    opts = {key: raw.get(key, default) for key, default in DEFAULTS.items()}
    for key, value in DEFAULTS.items():
        if isinstance(value, dict):
            opts[key] = {**value, **(raw.get(key) or {})}
    opts["workspace"] = schema.normalized(opts["workspace"])  # one spelling on every node and in every check
    return opts
