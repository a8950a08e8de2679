"""What travels to the nodes besides the script: secrets, keys, credentials.

Secrets are read on the laptop (a file named in ``secrets.files``, else the
environment variable of that name) and staged by SFTP into a directory only
the login user can enter, files 0600 before their content arrives: never in
a command line, the rendered script, a log or the output. Each cluster has
its own key pair, authorized on its nodes from its private addresses only.
A token in a repository URL is split off and travels as a git credential.
"""

import os
import secrets
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

from .localfiles import read_text, write_atomic
from .render import quote


def secret_value(name, opts):
    path = opts["secrets"]["files"].get(name)
    if path:
        try:
            return Path(path).expanduser().read_text().strip() or None
        except OSError:
            return None
    return os.environ.get(name) or None


def configured_secrets(opts):
    """The secrets the config names, read on the laptop: [(kind, name, value or None)].

    ``kind``: "env" (a variable of ~/.env), "wandb" or "huggingface"."""
    found = [("env", name, secret_value(name, opts)) for name in opts["secrets"]["env"]]
    return found + [(kind, opts["secrets"][kind], secret_value(opts["secrets"][kind], opts))
                    for kind in ("wandb", "huggingface") if opts["secrets"][kind]]


def git_credentials(opts):
    """The credential lines split off the repo and dotfiles URLs (scheme://user:token@host), once each."""
    lines = (split_credentials(opts["repo"]["url"])[1], split_credentials(opts["dotfiles"]["repo"])[1])
    return list(dict.fromkeys(line for line in lines if line))


def age_identity(opts):
    """The age key file's text, when dotfiles are configured and it exists."""
    age = Path(opts["dotfiles"]["age_key"]).expanduser()
    return age.read_text() if opts["dotfiles"]["repo"] and age.is_file() else None


FORMATS = {"wandb": ("netrc", "machine api.wandb.ai\n  login user\n  password {}\n"),
           "huggingface": ("hf_token", "{}\n")}


def staged_files(opts, key_path, nodes):
    """{name: bytes} sent to every node's staging directory, and missing secret names."""
    files, missing, env_lines = {}, [], []
    for kind, name, value in configured_secrets(opts):
        if value is None:
            missing.append(name)
        elif kind == "env":
            env_lines.append(f"export {name}={quote(value)}\n")
        else:
            fname, fmt = FORMATS[kind]
            files[fname] = fmt.format(value)
    if env_lines:
        files["env"] = "".join(env_lines)
    if git_credentials(opts):
        files["git-credentials"] = "".join(f"{line}\n" for line in git_credentials(opts))
    if age_identity(opts) is not None:
        files["age_key"] = age_identity(opts)
    if key_path is not None:  # None: --dry-run of a cluster that has no key yet
        pub = Path(f"{key_path}.pub").read_text().strip()
        files["cluster_key"] = key_path.read_text()
        files["cluster_key.pub"] = pub + "\n"
        files["cluster_key.authorized"] = f'from="{",".join(n.private for n in nodes)}" {pub}\n'
    return {k: v.encode() for k, v in files.items()}, missing


def secret_values(opts, key_path):
    """Every secret value multinode sends to a node: the secrets, the git tokens, the age
    identity and the cluster's private key (its lines). Teardown's proof looks for each
    (see `ledger`, which also says what is too short to look for)."""
    values = [value for _, _, value in configured_secrets(opts) if value] + git_tokens(opts)
    values += [ln for ln in (age_identity(opts) or "").splitlines() if ln.startswith("AGE-SECRET-KEY-")]
    values += key_values(key_path)
    return list(dict.fromkeys(v.strip() for v in values if v and v.strip()))


def key_values(key_path):
    """The lines of the cluster's private key that are its own (what a search for it looks for)."""
    if key_path is None or not Path(key_path).is_file():
        return []
    # Its first two lines are the format's header and the public key: alike in every
    # OpenSSH key (a host key would match) or not secret. The rest is this key's own.
    return [ln for ln in Path(key_path).read_text().splitlines() if not ln.startswith("-----")][2:]


def git_tokens(opts):
    """The tokens of the repository URLs (scheme://user:password@host: the password, else a token given as the user)."""
    tokens = []
    for line in git_credentials(opts):
        user, password = line.rsplit("@", 1)[0].split("://", 1)[1].split(":", 1)
        tokens.append(urllib.parse.unquote(password or user))
    return tokens


def cluster_signature(nodes):
    """Which cluster a key is for: its head's machine. Workers come and go (`fab add`, `remove`,
    `replace`) under the same key, each authorized from the members' private addresses only; a
    cluster with another head (a new -H cluster, a replaced head) gets a new key."""
    head = nodes[0]
    return f"{head.public} {head.port} {head.private}\n"


def cluster_key(state_path, nodes, create=True, renew=False):
    """The cluster's own key pair (never the laptop's key), fresh for each cluster.

    Kept beside the remembered cluster with the machine it is for (`cluster_signature`);
    another (a new cluster) makes a new pair and forgets the old one,
    whose line leaves each node's authorized_keys when it joins the new
    cluster. Without ``create``: None where a new pair would be made.
    ``renew``: a new pair all the same (a machine that left kept the old one).
    """
    path = Path(state_path).with_name("cluster_key")
    owner = path.with_name("cluster_key.cluster")
    if not renew and path.exists() and Path(f"{path}.pub").exists() and read_text(owner) == cluster_signature(nodes):
        return path
    if not create:
        return None
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        new = Path(tmp, "key")
        comment = f"multinode-cluster {time.strftime('%Y-%m-%d')} {secrets.token_hex(3)}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(new)],
                       check=True, stdin=subprocess.DEVNULL)
        os.replace(new, path)
        os.replace(f"{new}.pub", f"{path}.pub")
    write_atomic(owner, cluster_signature(nodes), mode=0o600, backup=False)
    return path


def split_credentials(url):
    """``(url without its user:password, a git-credential-store line or None)``.

    A token in an http(s) URL (``https://user:TOKEN@host/repo.git``) never
    reaches a command line, the script or a log: the node's git gets it from
    a staged credential file.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not (parts.username or parts.password):
        return url, None
    host = parts.hostname + (f":{parts.port}" if parts.port else "")
    clean = urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))
    user, password = (urllib.parse.quote(urllib.parse.unquote(v or ""), safe="") for v in (parts.username, parts.password))
    return clean, f"{parts.scheme}://{user}:{password}@{host}"


def without_credentials(opts):
    """``opts`` with the repository URLs cleaned (see `split_credentials`)."""
    return {**opts, "repo": {**opts["repo"], "url": split_credentials(opts["repo"]["url"])[0]},
            "dotfiles": {**opts["dotfiles"], "repo": split_credentials(opts["dotfiles"]["repo"])[0]}}


def private_dir(sftp, path):
    """Make ``path`` (under the login home) a directory only its owner can enter, parents too."""
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        sub = "/".join(parts[:depth])
        try:
            sftp.stat(sub)
        except FileNotFoundError:
            sftp.mkdir(sub, 0o700)
    for depth in range(2, len(parts) + 1):  # ours alone: the parents we own, not ~/.cache itself
        sftp.chmod("/".join(parts[:depth]), 0o700)
