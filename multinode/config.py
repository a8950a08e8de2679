"""Configuration: every key of the ``multinode`` config declared once, in `KEYS`.

Each key has its check, its default and what it means; `DEFAULTS` (what Invoke
is configured with), `SCHEMA` (what `schema.check` walks) and the page
docs/configuration.md (`config_page`: ``python -m multinode.config --markdown``;
tests/test_docs.py fails while the page differs) are derived from it.

Override in ``~/.fabric.yaml``, ``/etc/fabric.yaml`` or a project
``fabric.yaml`` (``multinode: {users: [ubuntu, root]}``); CLI flags win.
"""

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, NamedTuple

from . import schema
from .inventory import USER_RE, BadInput, parse_jump, state_path
from .schema import (ALIAS, BRANCH, ENV_NAME, ENV_NAME_OR_EMPTY, FACT, FACTS, KEX, PORT, REPO_NAME, SECONDS, TOOL, URL,
                     USER, absolute, boolean, dict_of, integer, line, list_of, not_option, number, step_name, text,
                     workspace)


@schema.kind("`[USER@]HOST[:PORT]`, `none` or empty")
def jump_host(value):
    """``multinode.jump``: empty, ``none``, or a jump host as ``--jump`` takes it."""
    if text(value) not in ("", "none"):
        try:
            parse_jump(value)
        except BadInput as exc:
            raise schema.Problem(str(exc)) from None
    return value


class Key(NamedTuple):
    """One config key: its dotted name, the check its value must pass, its default, what it means
    (Markdown, one line) and, where the default is too long for the docs' table, what the table shows."""
    name: str
    check: Callable
    default: Any
    doc: str
    shown: str = ""


KEYS = (
    Key("users", list_of(USER, nonempty=True), ["ubuntu", "user", "root"],
        "login users detect-user tries, in order (an explicit `USER@` wins; root last: RunPod and Vast.ai "
        "containers)"),
    Key("identity", line, "~/.ssh/id_ed25519", "your key for the nodes (`fab -i` wins)"),
    Key("alias_prefix", ALIAS, "rental", "aliases `rental0` (head), `rental1`, ..."),
    Key("workers", integer(1, 1024), 32, "nodes worked on at once"),
    Key("connect_timeout", integer(1, 600), 10, "seconds for TCP connect, SSH banner and login (`fab -t` wins)"),
    Key("known_hosts", line, "~/.ssh/known_hosts", "where `hostkeys` records the nodes' keys, which logins check"),
    Key("ssh_config", line, "~/.ssh/config", "where detect-user writes the `rentalN` aliases"),
    Key("jump", jump_host, "", "a jump host in front of every node, `[USER@]HOST[:PORT]` (`--jump` on `hostkeys` and "
        "`setup` wins; `none`: no jump host): its key pinned as a node's, every connection through it, the "
        "`rentalN` aliases through its alias `rental-jump`; empty: the remembered cluster's, else none"),
    Key("state", line, "", "where the cluster is remembered; empty: `$XDG_CONFIG_HOME/multinode/cluster.json` (its "
        "own key pair `cluster_key`, fresh for each cluster, lives beside it)"),
    Key("workspace", workspace, "/workspace", "the workspace directory on each node: a directory of its own (not a "
        "system directory nor directly inside `/home`, `/root`, `/usr`, `/etc`, `/var`, `/tmp`, ...), normalized"),
    Key("repo.url", URL, "", "the workspace repository, cloned into `<workspace>/<name>`"),
    Key("repo.branch", BRANCH, "main", "its branch"),
    Key("repo.name", REPO_NAME, "", "its directory's name; empty: from the URL"),
    Key("python.version", not_option, "python3", "interpreter for `uv venv --python` (the venv: `<repo>/venv`)"),
    Key("python.index_url", URL, "", "uv's package index (`--index-url`)"),
    Key("python.find_links", URL, "", "where else uv finds packages (`--find-links`)"),
    Key("python.no_index", boolean, False, "uv uses no package index (`--no-index`)"),
    Key("python.downloads", boolean, True, "let uv download a Python it cannot find"),
    Key("secrets.env", list_of(ENV_NAME), ["ANTHROPIC_API_KEY"], "names written to `~/.env`"),
    Key("secrets.files", dict_of(ENV_NAME, line), {},
        "`NAME: path` on the laptop (else the environment variable `NAME`)"),
    Key("secrets.wandb", ENV_NAME_OR_EMPTY, "WANDB_API_KEY", "name of the wandb key (to `~/.netrc`)"),
    Key("secrets.huggingface", ENV_NAME_OR_EMPTY, "HF_TOKEN",
        "name of the Hugging Face token (to `~/.cache/huggingface/token`)"),
    Key("dotfiles.repo", URL, "", "chezmoi source repository"),
    Key("dotfiles.age_key", line, "~/key.txt", "your age identity on the laptop (sent as `~/key.txt`)"),
    Key("dotfiles.overwrite", boolean, False, "overwrite a dotfile changed on a node since chezmoi wrote it "
        "(`chezmoi apply --force`) instead of failing the dotfiles step"),
    Key("git.name", line, "", "global git user name on the nodes"),
    Key("git.email", line, "", "global git email on the nodes"),
    Key("installers.uv", text, "curl -LsSf https://astral.sh/uv/install.sh | env UV_NO_MODIFY_PATH=1 sh",
        "shell command that installs a missing uv (as the login user, stdin closed)", "astral.sh's install script"),
    Key("installers.chezmoi", text, 'sh -c "$(curl -fsLS get.chezmoi.io)" -- -b "$HOME/.local/bin"',
        "the same for chezmoi", "get.chezmoi.io's install script"),
    Key("installers.age", text, "as_root apt-get install -y -q age",
        "the same for age (`as_root CMD` runs CMD as root directly or through `sudo -n`, never a password prompt)",
        "`as_root apt-get install -y -q age`"),
    Key("installers.docker", text, "curl -fsSL https://get.docker.com | as_root sh", "the same for Docker",
        "get.docker.com's install script"),
    Key("docker.required", boolean, False,
        "install Docker even where no systemd could run its daemon (a container, where the docker step is skipped)"),
    Key("tools", list_of(TOOL),
        [{"name": "claude", "check": "command -v claude", "install": "curl -fsSL https://claude.ai/install.sh | bash"}],
        "extra tools, `{name, check, install}`: each installed when its check fails", "Claude Code's CLI"),
    Key("network.check_port", PORT, 22, "the port of each peer's private address the network step tries (multi-node)"),
    Key("network.timeout", integer(1, 600), 5, "seconds it tries"),
    Key("network.probe_port", PORT, 40099,
        "verify's pair probes: each node listens there for a few seconds while every other node connects"),
    Key("network.bandwidth_port", PORT, 40100, "the bandwidth task's port"),
    Key("network.min_gbits", number(0, 10_000), 0, "Gbit/s under which a link fails the bandwidth task (0: no floor)"),
    Key("nccl.sysfs_root", absolute, "/sys", "where InfiniBand devices are looked up (a test gives a fake tree)"),
    Key("head_ssh.kex_algorithms", KEX, "curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256",
        "key exchange of the head's `workerK` aliases: the one the laptop's own connections use (paramiko has no "
        "post-quantum exchange); OpenSSH's default sntrup761 costs the head about 8x the CPU per connection (one per "
        "worker in head-ssh, one per tmux pane). Names the head's ssh does not know are left out. `\"\"`: OpenSSH's "
        "default"),
    Key("ray.enabled", boolean, True, "`false` leaves Ray out (the ray step is skipped)"),
    Key("ray.port", PORT, 6379, "the head's GCS port"),
    Key("ray.start_flags", line, "", "extra flags of every node's `ray start`"),
    Key("ray.head_flags", line, "--include-dashboard=false", "extra flags of the head's `ray start`"),
    Key("ray.wait", integer(1, 3600), 120, "seconds for a node's Ray to start and for the cluster to be complete"),
    Key("script_timeout", SECONDS, 3600, "seconds a node's bootstrap script may run before that node is failed"),
    Key("check_timeout", SECONDS, 300, "the same for verify, head-ssh, tmux and sync on a node; `exec`'s default "
        "`--timeout`"),
    Key("step_timeout", SECONDS, 900, "seconds one bootstrap step may run"),
    Key("step_timeouts", dict_of(step_name, SECONDS), {}, "the same for the steps named, e.g. `{python: 1800}`"),
    Key("progress_interval", integer(1, 3600), 30,
        "without a terminal: a line per node for every this many seconds one step runs"),
    Key("smoke.port", PORT, 29500,
        "the smoke test's rendezvous port on the head (rank 0 serves it on the head's private address alone)"),
    Key("smoke.size_mb", number(0.001, 16384), 64, "MiB each rank all-reduces"),
    Key("smoke.iters", integer(1, 10_000), 10, "timed all-reduces"),
    Key("smoke.timeout", integer(5, 3600), 300, "seconds each part of the smoke test may take"),
    Key("status.interval", number(0.5, 3600), 5, "seconds between the refreshes of `fab status --watch` (`--interval` "
        "wins)"),
    Key("jobs.port", integer(0, 65535), 0,
        "`MASTER_ADDR`'s port for `fab launch` (0: a port free on the job's rank-0 node, chosen at launch)"),
    Key("jobs.grace", integer(1, 3600), 10,
        "seconds a stopped job's processes get between TERM and KILL"),
    Key("jobs.lost_after", integer(2, 3600), 10,
        "seconds without an answer after which the head's watchdog takes a job's node for lost"),
    Key("setup.bandwidth", boolean, False, "run the bandwidth ring as part of `setup`"),
    Key("setup.smoke", boolean, False, "run the smoke test as part of `setup`"),
    Key("sync.exclude", list_of(line), [".git", "venv", ".venv", "__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache"],
        "names (or paths) `sync` never sends; `--exclude` adds to them"),
    Key("rental.min_shm_gib", number(0, 1_000_000), 1, "GiB of `/dev/shm` under which verify's `shm` check fails "
        "(container images give 64 MiB, where NCCL fails with \"unhandled system error\")"),
    Key("rental.min_disk_gib", number(0, 1_000_000), 5,
        "GiB free in the workspace's filesystem under which verify's `disk` check fails"),
    Key("gpu.count", integer(0, 64), 0, "GPUs each node must have (0: none expected)"),
    Key("gpu.model", line, "", "a part of their model name, e.g. `H100`"),
    Key("consistency.ignore", list_of(FACT), [],
        f"facts allowed to differ across nodes: {', '.join(f'`{fact}`' for fact in FACTS)}"),
    Key("notify.urls", list_of(line), [], "apprise URLs, e.g. `ntfy://my-topic`, `json://hooks.example/cluster`"),
    Key("notify.desktop", boolean, True, "a desktop notification where the laptop can show one"),
    Key("log_dir", line, "", "local logs `setup_rentalN.log` (0600, never written through a symlink); empty: "
        "`$XDG_STATE_HOME/multinode/logs` (0700)"),
    Key("tail", integer(0, 1_000_000), 100, "log lines shown per node"),
)


def _tree(field):
    """``{name: field}`` of every key, nested by the dotted names: ``{"repo": {"url": ...}}``."""
    tree = {}
    for key in KEYS:
        *groups, leaf = key.name.split(".")
        node = tree
        for group in groups:
            node = node.setdefault(group, {})
        node[leaf] = getattr(key, field)
    return tree


DEFAULTS = _tree("default")
SCHEMA = _tree("check")


def _yaml(value):
    """``value`` as it is written in YAML's flow style."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value) if value[:1] in ("", *"*&!|>'\"%@`{[#") else value
    if isinstance(value, list):
        return f"[{', '.join(map(_yaml, value))}]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_yaml(k)}: {_yaml(v)}" for k, v in value.items()) + "}"
    return str(value)


def config_table():
    """The table of docs/configuration.md (Markdown): a row per key, as declared: its type (the
    words of its check, `schema.kind_of`), default and meaning."""
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for key in KEYS:
        default = key.shown or "`" + _yaml(key.default).replace("|", "\\|") + "`"
        rows.append(f"| `{key.name}` | {schema.kind_of(key.check)} | {default} | {key.doc} |")
    return "\n".join(rows) + "\n"


PAGE = """\
# Configuration

<!-- Generated from multinode/config.py (KEYS): edit there, then
     uv run python -m multinode.config --markdown > docs/configuration.md
     tests/test_docs.py fails while this page differs from what that prints. -->

Every setting lives under the `multinode` key of a Fabric config file:
`~/.fabric.yaml`, `/etc/fabric.yaml`, or this project's `fabric.yaml`.
Command-line flags win over the file (`fab -i` over `identity`, `fab -t`
over `connect_timeout`, a task's option over its key).

```yaml run=config-example
# ~/.fabric.yaml
multinode:
  users: [ubuntu, root]
  identity: ~/.ssh/rentals
  repo:
    url: https://github.com/you/train.git
  gpu:
    count: 8
```

The whole `multinode` key is checked before anything connects. An unknown
key (`worksapce`, `repo.ulr`) is refused, naming the nearest valid one.
Types and ranges are checked: `"false"` is not a boolean, `"1h"` is not a
number of seconds. Names are whole values (`alias_prefix`, the `secrets.env`
names, tool names). A branch or URL cannot start with `-`. A damaged
`cluster.json` is one clear line too. Each problem is one line on stderr,
exit code 2, and nothing is written.

The project's `fabric.yaml` sets `tasks.executor_class` (Fabric reads that
key only from a config file): run `fab` in this directory, or use the
`multinode` command, which has the executor built in.

## Keys

A dotted key is nested in the file: `repo.url` is `url:` under `repo:`.

{table}"""


def config_page():
    """docs/configuration.md: where the settings live, how they are checked, and a row per key."""
    return PAGE.format(table=config_table())


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
    schema.check(raw, SCHEMA)
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
        jump=raw["jump"],
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


if __name__ == "__main__":
    import sys

    if sys.argv[1:] not in (["--table"], ["--markdown"]):
        sys.exit("usage: python -m multinode.config --table|--markdown  (the table, or all of docs/configuration.md)")
    print(config_table() if sys.argv[1] == "--table" else config_page(), end="")
