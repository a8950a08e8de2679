"""What the internet gives a real node, served locally to the sandbox nodes.

The forge is a namespace on the public bridge (198.18.0.2) running a real
``git daemon`` (git://198.18.0.2/workspace.git, /fork.git, /dotfiles.git,
/dotfiles-template.git) and a real
HTTP server (http://198.18.0.2:8080/: ``bin/`` installers for uv, chezmoi
and age, ``wheels/`` a Python wheelhouse; the repositories at ``git/``, and
on port 8081 behind a token, as a private repository host serves them). The downloads are fetched once,
from PyPI and Debian, into the image cache; the repositories are made anew
for each sandbox: a workspace with a small pyproject, and chezmoi dotfiles
with a file encrypted to a fresh age key (kept as ``age-key.txt``).
"""

import glob
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import image

FORGE_IP = "198.18.0.2"
HTTP = f"http://{FORGE_IP}:8080"
GIT = f"git://{FORGE_IP}"
# The nodes' Python is Debian 12's 3.11: wheels for it, whatever runs this.
WHEELS = ["six==1.17.0", "ray==2.60.0"]
NODE_WHEEL_TAGS = ["--python-version", "3.11", "--implementation", "cp", "--platform", "manylinux2014_x86_64",
                   "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64"]
SID = "deb [trusted=yes] http://deb.debian.org/debian sid main\n"
# A private repository host: the same git/ over HTTP, behind Basic authentication with
# this token (characters that git's credential store URL-encodes, as real tokens may hold).
PRIVATE_HTTP = f"http://{FORGE_IP}:8081"
TOKEN_USER, TOKEN = "forge", "ghp/Sandbox+Token=42abc"
# Serves DIRECTORY on PORT at ADDRESS to whoever gives USER:TOKEN (read from TOKEN_FILE).
AUTH_SERVER = """
import base64, functools, http.server, sys
port, address, directory, token_file = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
want = "Basic " + base64.b64encode(open(token_file, "rb").read().strip()).decode()
class Handler(http.server.SimpleHTTPRequestHandler):
    def send_head(self):
        if self.headers.get("Authorization") != want:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="forge"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return super().send_head()
http.server.ThreadingHTTPServer((address, port), functools.partial(Handler, directory=directory)).serve_forever()
"""


def _run(*args, **kw):
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, **kw)


def _debs(dest, packages, sources=None):
    """Download Debian packages (from ``sources``, else this machine's) and unpack them."""
    with tempfile.TemporaryDirectory() as tmp:
        opts = []
        if sources:
            Path(tmp, "sources.list").write_text(sources)
            Path(tmp, "lists/partial").mkdir(parents=True)
            opts = [f"-oDir::Etc::SourceList={tmp}/sources.list", "-oDir::Etc::SourceParts=/dev/null",
                    f"-oDir::State::Lists={tmp}/lists"]
            _run("apt-get", "-q", *opts, "update")
        _run("apt-get", "-q", *opts, "download", *packages, cwd=tmp)
        for deb in glob.glob(f"{tmp}/*.deb"):
            _run("dpkg-deb", "-x", deb, f"{tmp}/x")
        for path in Path(tmp, "x/usr/bin").iterdir():
            shutil.copy2(path, dest / path.name)


def assets(log=print):
    """The cached downloads: ``bin/`` (uv, chezmoi, age, age-keygen) and ``wheels/``."""
    root = image.cache_dir() / "forge-assets-2"
    if (root / ".complete").exists():
        return root
    log(f"sandbox: fetching the forge's downloads into {root} (once)")
    tmp = root.with_name(root.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "bin").mkdir(parents=True)
    (tmp / "wheels").mkdir()
    pip = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "-q"]
    _run(*pip, *NODE_WHEEL_TAGS, "-d", tmp / "wheels", *WHEELS)
    with tempfile.TemporaryDirectory() as whl:
        _run(*pip, "--no-deps", "-d", whl, "--platform", "manylinux2014_x86_64", "uv")
        _run(sys.executable, "-m", "zipfile", "-e", glob.glob(f"{whl}/uv-*.whl")[0], whl)
        shutil.copy2(glob.glob(f"{whl}/uv-*.data/scripts/uv")[0], tmp / "bin/uv")
    (tmp / "bin/uv").chmod(0o755)
    _debs(tmp / "bin", ["age"])
    _debs(tmp / "bin", ["chezmoi"], sources=SID)
    (tmp / ".complete").write_text("ok\n")
    shutil.rmtree(root, ignore_errors=True)
    tmp.rename(root)
    return root


def _repo(path, files, env, branches=None):
    """A bare repository at ``path`` with one commit of ``files`` on main; each of
    ``branches`` ({name: files}) one commit more on top of it."""
    def write(work, files):
        for name, text in files.items():
            Path(work, name).parent.mkdir(parents=True, exist_ok=True)
            Path(work, name).write_bytes(text if isinstance(text, bytes) else text.encode())
        _run("git", "-C", work, "add", "-A")

    with tempfile.TemporaryDirectory() as work:
        _run("git", "init", "-q", "-b", "main", work)
        write(work, files)
        _run("git", "-C", work, "commit", "-q", "-m", "initial", env=env)
        for branch, extra in (branches or {}).items():
            _run("git", "-C", work, "checkout", "-q", "-b", branch, "main")
            write(work, extra)
            _run("git", "-C", work, "commit", "-q", "-m", f"{branch}: work in progress", env=env)
        _run("git", "-C", work, "checkout", "-q", "main")
        _run("git", "clone", "-q", "--bare", work, path)
        _run("git", "-C", path, "update-server-info")  # served over plain HTTP too


PYPROJECT = """\
[project]
name = "workspace"
version = "0.1.0"
requires-python = ">=3.9"
dependencies = ["six", "ray"]
"""

SECRET_TEXT = "sandbox dotfiles secret: decrypted\n"

# Dotfiles as people keep them: they own the shell's startup files (with the
# Debian/Ubuntu guard that returns at once from a non-interactive shell), git's
# identity, ssh's config, tmux's config; one file is encrypted and one script
# runs when its content changes.
DOTFILES = {
    "dot_bashrc": (
        "# ~/.bashrc: from my dotfiles\n"
        "# If not running interactively, don't do anything\n"
        "case $- in\n    *i*) ;;\n      *) return;;\nesac\n"
        "HISTSIZE=100000\nexport EDITOR=vi\n"
        "[ -f ~/.bash_aliases ] && . ~/.bash_aliases\n"
    ),
    "dot_profile": (
        "# ~/.profile: from my dotfiles\n"
        'if [ -n "$BASH_VERSION" ] && [ -f "$HOME/.bashrc" ]; then . "$HOME/.bashrc"; fi\n'
        'export PATH="$HOME/.local/bin:$PATH"\n'
    ),
    "dot_bash_aliases": "alias ll='ls -l'\n",
    "dot_gitconfig": "[user]\n    name = Dotfiles Person\n    email = dotfiles@example.invalid\n[pull]\n    ff = only\n",
    # A careless but common Host *: our own connections must stay strict all the same.
    "private_dot_ssh/config": ("Host *\n    ServerAliveInterval 60\n    AddKeysToAgent yes\n"
                               "    StrictHostKeyChecking no\n    UserKnownHostsFile /dev/null\n"),
    "dot_tmux.conf": "set -g history-limit 50000\nset -g mouse on\n",
    "run_onchange_after_hello.sh": "#!/bin/sh\ndate +%s%N >>\"$HOME/.dotfiles-onchange.log\"\n",
}


def populate(root, log=print):
    """Make the forge's content under ``root`` (``git/``, ``http/``, ``age-key.txt``)."""
    downloads = assets(log)
    http = root / "http"
    shutil.rmtree(root, ignore_errors=True)
    http.mkdir(parents=True)
    shutil.copytree(downloads / "bin", http / "bin")
    shutil.copytree(downloads / "wheels", http / "wheels")
    (http / "git").symlink_to(root / "git")  # http://198.18.0.2:8080/git/NAME.git (git's dumb HTTP)
    bins = http / "bin"
    key = root / "age-key.txt"
    _run(bins / "age-keygen", "-o", key)
    recipient = _run(bins / "age-keygen", "-y", key).stdout.strip()
    secret = _run(bins / "age", "-r", recipient, "-a", input=SECRET_TEXT).stdout
    env = {"GIT_AUTHOR_NAME": "forge", "GIT_AUTHOR_EMAIL": "forge@sandbox.invalid",
           "GIT_COMMITTER_NAME": "forge", "GIT_COMMITTER_EMAIL": "forge@sandbox.invalid",
           "PATH": "/usr/bin:/bin", "HOME": str(root)}
    _repo(root / "git/workspace.git", {
        "pyproject.toml": PYPROJECT,
        "train.py": "import ray\nray.init(address='auto')\nprint(ray.cluster_resources())\n",
    }, env, branches={"dev": {"DEV.md": "the dev branch\n"}})
    _run("git", "clone", "-q", "--bare", root / "git/workspace.git", root / "git/fork.git")  # the same repo elsewhere
    _repo(root / "git/dotfiles.git", {**DOTFILES, "encrypted_private_dot_secret.age": secret}, env)
    # Dotfiles whose own config template makes chezmoi's config (a prompt with a default, age).
    _repo(root / "git/dotfiles-template.git", {
        ".chezmoi.toml.tmpl": (
            '{{- $email := promptStringOnce . "email" "Your e-mail" "templated@example.invalid" -}}\n'
            'encryption = "age"\n[age]\n    identity = "~/key.txt"\n'
            f'    recipient = "{recipient}"\n[data]\n    email = {{{{ $email | quote }}}}\n'),
        "dot_gitconfig.tmpl": "[user]\n    email = {{ .email }}\n",
        "encrypted_private_dot_secret.age": secret,
    }, env)
    return key


class Forge:
    def __init__(self, sandbox):
        self.sandbox = sandbox
        self.ns = f"{sandbox.name}-forge"
        self.root = sandbox.dir / "forge"

    @property
    def age_key(self):
        return self.root / "age-key.txt"

    def up(self, log=print):
        populate(self.root, log)
        sb = self.sandbox
        sb._netns(self.ns)
        sb._plug(self.ns, "eth0", "br-pub", "forge", FORGE_IP)
        logfile = open(self.root / "forge.log", "a")
        token_file = self.root / "token"
        token_file.write_text(f"{TOKEN_USER}:{TOKEN}\n")
        for cmd in (
            ["git", "daemon", "--export-all", "--reuseaddr", f"--base-path={self.root / 'git'}",
             f"--listen={FORGE_IP}", str(self.root / "git")],
            [sys.executable, "-m", "http.server", "8080", "--bind", FORGE_IP, "--directory", str(self.root / "http")],
            [sys.executable, "-c", AUTH_SERVER, "8081", FORGE_IP, str(self.root / "http"), str(token_file)],
        ):
            subprocess.Popen(["ip", "netns", "exec", self.ns, *cmd], stdin=subprocess.DEVNULL,
                             stdout=logfile, stderr=logfile, start_new_session=True)
        logfile.close()
        for port in (9418, 8080, 8081):
            self._wait(port)
        self.config_file.write_text(json.dumps({"multinode": self.config()}, indent=2) + "\n")

    @property
    def config_file(self):
        """A Fabric config file pointing multinode at this forge: ``fab -f FILE ...``."""
        return self.sandbox.dir / "fabric.yaml"

    def _wait(self, port):
        probe = f"import socket; socket.create_connection(('{FORGE_IP}', {port}), timeout=1)"
        for _ in range(200):
            if subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", probe],
                              capture_output=True).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f"forge port {port} did not open: see {self.root / 'forge.log'}")

    def config(self):
        """multinode settings that point a node at the forge instead of the internet."""
        fetch = "mkdir -p ~/.local/bin && curl -fsS {url}/bin/{b} -o ~/.local/bin/{b} && chmod +x ~/.local/bin/{b}"
        return {
            "repo": {"url": f"{GIT}/workspace.git", "branch": "main"},
            "python": {"find_links": f"{HTTP}/wheels/", "no_index": True},
            "dotfiles": {"repo": f"{GIT}/dotfiles.git", "age_key": str(self.age_key)},
            # Small Ray nodes: a sandbox node is not a GPU machine.
            "ray": {"start_flags": "--num-cpus=1 --object-store-memory=100000000"},
            "tools": [],  # the default (Claude Code's CLI) installs from the internet
            "installers": {
                "uv": fetch.format(url=HTTP, b="uv"),
                "chezmoi": fetch.format(url=HTTP, b="chezmoi"),
                "age": " && ".join(fetch.format(url=HTTP, b=b) for b in ("age", "age-keygen")),
            },
        }
