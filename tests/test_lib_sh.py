"""Unit tests: the shell helpers every rendered script includes (run by real bash)."""

import os
import re
import subprocess

from multinode.nodescript import node_script
from multinode.config import options
from multinode.inventory import Node
from multinode.render import render

LIB = render("lib.sh.j2")


def run(script, cwd):
    return subprocess.run(["bash", "-euc", LIB + script], cwd=cwd, capture_output=True, text=True)


def sh(script, cwd):
    r = run(script, cwd)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_put_block_in_place_idempotent_and_keeps_the_rest(tmp_path):
    (tmp_path / "body").write_text("a\nb\n")
    (tmp_path / "f").write_text("top\n")
    assert sh("put_block f x body 644 && echo changed", tmp_path) == "changed\n"
    with open(tmp_path / "f", "a") as fh:
        fh.write("user line\n")
    assert sh("put_block f x body 644 || echo same $?", tmp_path) == "same 1\n"
    (tmp_path / "body").write_text("c\n")
    sh("put_block f x body 644", tmp_path)
    assert (tmp_path / "f").read_text() == "top\n# BEGIN x (managed by multinode)\nc\n# END x\nuser line\n"
    assert (tmp_path / "f.multinode.bak").read_text().count("a\nb\n") == 1
    assert oct((tmp_path / "f").stat().st_mode & 0o777) == "0o644"
    # An empty body takes the block out, and nothing else.
    sh("put_block f x /dev/null 644", tmp_path)
    assert (tmp_path / "f").read_text() == "top\nuser line\n"


def test_new_file_gets_the_mode_and_install_file_skips_identical(tmp_path):
    (tmp_path / "body").write_text("secret\n")
    sh("umask 077; put_block new x body", tmp_path)
    assert oct((tmp_path / "new").stat().st_mode & 0o777) == "0o600"
    assert sh("install_file body copy 600 && echo changed; install_file body copy 600 || echo same", tmp_path) == \
        "changed\nsame\n"


def test_unterminated_block_fails_and_changes_nothing(tmp_path):
    text = "keep 1\n# BEGIN x (managed by multinode)\nold\nkeep 2 (the user's, after a lost END line)\n"
    (tmp_path / "f").write_text(text)
    (tmp_path / "body").write_text("new\n")
    r = run("put_block f x body 644", tmp_path)
    assert r.returncode == 2
    assert "has no '# END x' line" in r.stderr and "nothing was changed" in r.stderr
    assert (tmp_path / "f").read_text() == text and not (tmp_path / "f.multinode.bak").exists()
    # Inside a step (changed_by): the step ends with the failure, not "unchanged".
    r = run("if changed_by put_block f x body 644; then echo changed; else echo unchanged; fi", tmp_path)
    assert r.returncode == 2 and "changed" not in r.stdout


def test_a_failed_write_fails(tmp_path):
    (tmp_path / "body").write_text("NCCL_SOCKET_IFNAME=ens7\n")
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro/conf").write_text("old\n")
    r = run("chmod 555 ro; chattr +i ro/conf 2>/dev/null || true; "
            "if changed_by put_block ro/conf x body 644; then echo changed; else echo unchanged; fi", tmp_path)
    subprocess.run(["chattr", "-i", str(tmp_path / "ro/conf")], capture_output=True)
    os.chmod(tmp_path / "ro", 0o755)
    if os.geteuid() != 0:  # as root only the immutable flag stops the write; as a user the mode does
        assert (tmp_path / "ro/conf").read_text() == "old\n"
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cannot write ro/conf" in r.stderr and "unchanged" not in r.stdout


def test_add_line_never_merges_into_the_last_key(tmp_path):
    keys = tmp_path / "authorized_keys"
    keys.write_text("ssh-ed25519 AAAAuser1 me@laptop\nssh-rsa AAAAuser2 me@desk")  # no final newline
    keys.chmod(0o600)
    assert sh("add_line authorized_keys 'ssh-ed25519 AAAAcluster multinode' && echo changed", tmp_path) == "changed\n"
    assert keys.read_text() == ("ssh-ed25519 AAAAuser1 me@laptop\nssh-rsa AAAAuser2 me@desk\n"
                                "ssh-ed25519 AAAAcluster multinode\n")
    assert (tmp_path / "authorized_keys.multinode.bak").read_text().endswith("me@desk")
    assert oct(keys.stat().st_mode & 0o777) == "0o600"
    assert sh("add_line authorized_keys 'ssh-ed25519 AAAAcluster multinode' || echo same", tmp_path) == "same\n"


def test_as_root_fails_clearly_without_root_or_sudo(tmp_path):
    # id and sudo as a user without sudo sees them.
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin/id").write_text('#!/bin/sh\ncase "$1" in -u) echo 1000;; -un) echo user;; esac\n')
    (tmp_path / "bin/id").chmod(0o755)
    r = run(f"PATH={tmp_path}/bin:/usr/bin:/bin; hash -r; sudo() {{ return 1; }}; as_root touch x", tmp_path)
    assert r.returncode == 2 and "needs root: touch x (user is not root and has no passwordless sudo)" in r.stderr
    assert not (tmp_path / "x").exists()


def workspace_script(tmp_path, workspace):
    nodes = [Node(0, "rental0", "198.18.0.10", "198.19.0.10")]
    opts = options({"multinode": {"workspace": str(workspace), "repo": {"url": ""}, "tools": []}})
    path = tmp_path / "node.sh"
    path.write_text(node_script(nodes[0], nodes, opts, []))
    return path


def test_a_symlinked_workspace_is_used_as_it_is(tmp_path):
    target = tmp_path / "disk"
    target.mkdir(mode=0o1777)
    target.chmod(0o1777)  # like /tmp: a mode the user chose, never changed
    (tmp_path / "ws").symlink_to(target)
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    script = workspace_script(tmp_path, tmp_path / "ws")
    outs = []
    for _ in range(2):
        r = subprocess.run(["bash", str(script), str(tmp_path / "home/stage"), "--only", "workspace"], env=env,
                           capture_output=True,
                           text=True, stdin=subprocess.DEVNULL, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        outs.append([re.sub(r" \[\d+\.\d+s\]$", "", ln) for ln in r.stdout.splitlines() if ln.startswith("STEP ")])
    assert outs == [[f"STEP workspace skipped {tmp_path / 'ws'} (no repo configured)"]] * 2
    assert oct(target.stat().st_mode & 0o7777) == "0o1777" and (tmp_path / "ws").is_symlink()
    assert (target / "onstart.log").exists()


def test_a_step_reading_stdin_fails_at_once_and_a_slow_one_times_out(tmp_path):
    nodes = [Node(0, "rental0", "198.18.0.10", "198.19.0.10")]
    opts = options({"multinode": {
        "workspace": str(tmp_path / "ws"), "repo": {"url": ""}, "step_timeouts": {"tools": 2},
        "tools": [{"name": "asks", "check": "false", "install": "read -r -p 'Continue? ' answer; echo got $answer"}],
    }})
    script = node_script(nodes[0], nodes, opts, [])
    (tmp_path / "node.sh").write_text(script)
    (tmp_path / "home").mkdir()
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    # stdin left open and never written, as Fabric's channel was: the script closes it itself.
    proc = subprocess.Popen(["bash", str(tmp_path / "node.sh"), str(tmp_path / "home/stage"), "--only", "tools"], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.wait(timeout=20) == 1
    finally:
        proc.kill()
    out = proc.stdout.read()
    assert "STEP tools failed exit 1" in out, out
    slow = script.replace("read -r -p", "echo fetching the installer; sleep 30; read -r -p")
    (tmp_path / "node.sh").write_text(slow)
    r = subprocess.run(["bash", str(tmp_path / "node.sh"), str(tmp_path / "home/stage"), "--only", "tools"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert re.search(r"^STEP tools failed timed out after 2s \(multinode.step_timeouts.tools\); its last line: "
                     r"fetching the installer \[2\.\ds\]$", r.stdout, re.M), r.stdout


def test_uvs_error_reaches_the_log_and_the_step_line(tmp_path):
    nodes = [Node(0, "rental0", "198.18.0.10", "198.19.0.10")]
    opts = options({"multinode": {"workspace": str(tmp_path / "ws"), "repo": {"url": "git://h/proj.git"},
                                  "tools": []}})
    script = node_script(nodes[0], nodes, opts, [])
    (tmp_path / "node.sh").write_text(script)
    home = tmp_path / "home"
    (home / ".local/bin").mkdir(parents=True)
    (home / ".local/bin/uv").write_text("#!/bin/sh\necho 'Resolved 3 packages'\n"
                                        "echo 'error: No solution found: torch==99 is unavailable' >&2\nexit 1\n")
    (home / ".local/bin/uv").chmod(0o755)
    venv = tmp_path / "ws/proj/venv/bin"
    venv.mkdir(parents=True)
    (venv / "python").symlink_to("/bin/true")
    (tmp_path / "ws/proj/requirements.txt").write_text("torch==99\n")
    r = subprocess.run(["bash", str(tmp_path / "node.sh"), str(home / "stage"), "--only", "python"],
                       env={**os.environ, "HOME": str(home)},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert "[python] Resolved 3 packages\n[python] error: No solution found: torch==99 is unavailable\n" in r.stdout
    assert re.search(r"^STEP python failed exit 1: error: No solution found: torch==99 is unavailable \[\d+\.\ds\]$",
                     r.stdout, re.M)


def test_ray_is_started_with_every_word_quoted(tmp_path):
    """A workspace with a space reaches `ray start` as one argument (tmux runs a quoted wrapper)."""
    nodes = [Node(0, "rental0", "198.18.0.10", "198.19.0.10"), Node(1, "rental1", "198.18.0.11", "198.19.0.11")]
    ws = tmp_path / "my ws"
    opts = options({"multinode": {"workspace": str(ws), "repo": {"url": "git://h/proj.git"}, "tools": [],
                                  "ray": {"wait": 2, "start_flags": "--num-cpus=1 --object-store-memory=100000000"}}})
    script = node_script(nodes[0], nodes, opts, [])
    (tmp_path / "node.sh").write_text(script)
    home, fake = tmp_path / "home", tmp_path / "bin"
    home.mkdir()
    fake.mkdir()
    # tmux: runs a new session's command itself; ray: records its arguments, one per line.
    (fake / "tmux").write_text('#!/bin/bash\ncase $1 in new-session) bash -c "${@: -1}" >/dev/null 2>&1 & ;; '
                               'show-environment|has-session|capture-pane) exit 1 ;; esac\nexit 0\n')
    (fake / "pgrep").write_text("#!/bin/sh\nexit 1\n")  # no raylet here (not another test's either)
    (fake / "pgrep").chmod(0o755)
    venv = ws / "proj/venv/bin"
    venv.mkdir(parents=True)
    (venv / "ray").write_text(f'#!/bin/bash\nprintf "%s\\n" "$0" "$@" >{tmp_path}/ray.args\n')
    for tool in (fake / "tmux", venv / "ray"):
        tool.chmod(0o755)
    env = {**os.environ, "HOME": str(home), "PATH": f"{fake}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(tmp_path / "node.sh"), str(home / "stage"), "--step", "ray"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert (tmp_path / "ray.args").exists(), r.stdout + r.stderr
    args = (tmp_path / "ray.args").read_text().splitlines()
    assert args == [str(venv / "ray"), "start", "--head", "--port=6379", "--include-dashboard=false",
                    "--node-ip-address=198.19.0.10", "--disable-usage-stats", "--block", "--num-cpus=1",
                    "--object-store-memory=100000000"]


def test_venv_torch_reads_torch_and_nccl_from_the_venvs_files(tmp_path):
    site = tmp_path / "venv/lib/python3.11/site-packages"
    (site / "torch").mkdir(parents=True)
    assert sh("venv_torch venv", tmp_path) == ""  # no version.py: no torch
    (site / "torch/version.py").write_text("from typing import Optional\n__version__ = '2.5.1+cu124'\ngit = 'x'\n")
    assert sh("venv_torch venv", tmp_path) == "2.5.1+cu124 nccl bundled\n"
    (site / "nvidia_nccl_cu12-2.21.5.dist-info").mkdir()
    assert sh("venv_torch venv", tmp_path) == "2.5.1+cu124 nccl 2.21.5\n"
    assert sh("venv_torch nowhere", tmp_path) == ""


def test_private_iface_names_the_interface_of_an_address(tmp_path):
    # The loopback carries 127.0.0.1 on every Linux machine; no interface carries 198.18.255.254 here.
    assert sh("private_iface 127.0.0.1", tmp_path) == "lo\n"
    assert sh("private_iface 198.18.255.254", tmp_path) == "\n"



def test_the_dotfiles_seal_holds_until_something_chezmoi_compares_changes(tmp_path):
    from multinode.sandbox.forge import assets
    env = {**os.environ, "HOME": str(tmp_path), "PATH": f"{assets() / 'bin'}:{os.environ['PATH']}"}
    source = tmp_path / ".local/share/chezmoi"
    (source / "dot_config").mkdir(parents=True)
    (source / "dot_config/tool.conf").write_text("a = 1\n")
    (source / "remove_dot_old").write_text("")
    (tmp_path / ".cache/multinode").mkdir(parents=True)

    def seal():
        subprocess.run(["bash", "-euc", LIB + 'chezmoi apply --no-tty </dev/null; seal_dotfiles "$1"', "-", str(source)],
                       env=env, capture_output=True, text=True, check=True)
        return (tmp_path / ".cache/multinode/dotfiles.seal").read_text().split("\0")

    def holds():
        return subprocess.run(["bash", "-euc", LIB + "dotfiles_sealed"], env=env).returncode == 0

    records = seal()
    assert [r[0] for r in records if r.endswith("/.config")] == ["d"]  # a directory: its mode only
    assert any(r.startswith("f ") and r.endswith("/.config/tool.conf") for r in records)
    assert holds()
    (tmp_path / ".config/other-app").mkdir()  # beside a managed file: chezmoi does not look
    assert holds()
    (tmp_path / ".config").chmod(0o700)  # what chezmoi does compare of a directory: its mode
    assert not holds()
    (tmp_path / ".config").chmod(0o755)
    assert holds()
    (tmp_path / ".old").write_text("")  # a file the dotfiles remove is back
    assert not holds()
    (tmp_path / ".old").unlink()
    records = seal()
    assert holds()
    (source / "dot_config/tool.conf").write_text("a = 2\n")  # the source moved on (a pull)
    assert not holds()

    # An exact_ directory: chezmoi compares what it holds, so every directory is an "f".
    (source / "exact_dot_only").mkdir()
    (source / "exact_dot_only/f").write_text("f\n")
    records = seal()
    assert not any(r.startswith("d ") for r in records) and holds()
    (tmp_path / ".only/extra").write_text("")
    assert not holds()


def test_as_root_runs_the_package_manager_one_at_a_time_under_the_lock(tmp_path):
    """Two steps' `as_root apt-get ...` at once: the second starts when the first has ended."""
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "apt-get").write_text(f'#!/bin/sh\necho "$1 start $(date +%s.%N)" >>{tmp_path}/ran; sleep 1; '
                                  f'echo "$1 end $(date +%s.%N)" >>{tmp_path}/ran\n')
    (fake / "apt-get").chmod(0o755)
    script = (f'export PATH={fake}:$PATH PACKAGE_LOCK={tmp_path}/packages.lock; '
              "as_root apt-get a & as_root apt-get b & wait; PACKAGE_LOCK_HELD=1 as_root apt-get c")
    r = subprocess.run(["bash", "-euc", LIB + script], cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    ran = {f"{w} {edge}": float(at) for w, edge, at in (ln.split() for ln in (tmp_path / "ran").read_text().splitlines())}
    first, second = sorted("ab", key=lambda w: ran[f"{w} start"])
    assert ran[f"{second} start"] >= ran[f"{first} end"], ran
    assert "c end" in ran  # under a lock already held (a locked installer's own apt-get): no wait on itself
