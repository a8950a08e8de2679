"""teardown: give the machines back without leaving your secrets on them.

On every reachable node at once, one remote script (``templates/teardown.sh.j2``):
stop Ray and our tmux sessions, remove what multinode put there that is
secret (the ``~/.env`` and ``~/.netrc`` blocks, the Hugging Face token,
``~/key.txt``, the cluster key and its ``authorized_keys`` line, chezmoi's
config and the files it decrypted, staging leftovers; ``--workspace``: the
workspace too), then search the node for every secret value: the values
travel by SFTP into a directory only the login user can enter (never in a
command line), ``grep -F`` reads them from there, and the file goes. A file
still holding one fails the node, named (never the value).

Then on the laptop, for every node, reachable or not: the ``rentalN``
aliases leave ``~/.ssh/config``, the nodes' entries leave ``known_hosts``,
the remembered cluster and its key are deleted. A node that could not be
reached is forgotten too, with a warning that its secrets are still there.
"""

import sys
from pathlib import Path

from invoke import task

from .bootstrap import repo_name
from .connections import NodeError, bounded_sftp
from .hostkeys import forget_hosts
from .inventory import BadInput
from .localfiles import drop_block, locked, read_text, write_atomic
from .render import command, render
from .session import Outcome, checks_arguments, session_of
from .staging import cluster_key, private_dir, secret_values
from .users import BLOCK

PLACE = ".cache/multinode/teardown"
def node_script(node, opts, workspace):
    """The teardown script of ``node``."""
    return render("teardown.sh.j2", alias=node.alias, workspace=opts["workspace"],
                  repo_name=repo_name(opts["repo"]), workspace_too=workspace)


def removes(script):
    """What a teardown script takes away: its "# Removes:" lines."""
    return [line[len("# Removes: "):].rstrip(".") for line in script.splitlines() if line.startswith("# Removes: ")]


def teardown_arguments(session, yes=False, dry_run=False, **_):
    if not (yes or dry_run or sys.stdin.isatty()):
        raise BadInput("teardown asks before it wipes: give --yes when there is no terminal to ask on")


def confirmed(nodes):
    names = ", ".join(n.alias for n in nodes)
    try:
        answer = input(f"Tear down {names}: wipe multinode's secrets on them and forget them here? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def forget_locally(session, dry_run):
    """The cluster's aliases, host keys, remembered state and key off the laptop: what went."""
    s = session.settings
    gone = []
    with locked(s.ssh_config):
        text = read_text(s.ssh_config)
        kept = drop_block(text, BLOCK)
        if kept != text:
            gone.append(f"{s.ssh_config}: the {', '.join(n.alias for n in session.nodes)} aliases")
            if not dry_run:
                write_atomic(s.ssh_config, kept, mode=0o600)
    with locked(s.known_hosts):
        text = read_text(s.known_hosts)
        kept = "".join(forget_hosts(text.splitlines(keepends=True), {n.address for n in session.nodes}))
        if kept != text:
            gone.append(f"{s.known_hosts}: the nodes' host keys")
            if not dry_run:
                write_atomic(s.known_hosts, kept)
    key = Path(s.state).with_name("cluster_key")
    for path in (Path(s.state), key, Path(f"{key}.pub"), key.with_name("cluster_key.cluster")):
        if path.exists():
            gone.append(str(path))
            if not dry_run:
                path.unlink()
    return gone


@checks_arguments(teardown_arguments)
@task(help={"yes": "do not ask (needed without a terminal)",
            "dry_run": "list what would go, on the nodes and here; connect to nothing, change nothing",
            "workspace": "remove the workspace on the nodes too (your repo, its venv)"})
def teardown(c, yes=False, dry_run=False, workspace=False):
    """Wipe multinode's secrets from every node, prove none is left, and forget the cluster here."""
    session = session_of(c)
    opts = session.options
    nodes = list(session.nodes)
    if dry_run:
        session.remember = False
        for node in nodes:
            items = removes(node_script(node, opts, workspace))
            session.report.line("teardown", node, "ok", "would remove: " + "; ".join(items)
                                + (f": {opts['workspace']}" if workspace else ""))
        for what in forget_locally(session, dry_run=True):
            session.report.write(f"teardown: would forget {what}")
        return
    if not yes and not confirmed(nodes):
        raise BadInput("teardown: not confirmed; nothing was changed").exit()
    session.remember = False  # the cluster is forgotten below, not remembered again
    key = cluster_key(session.settings.state, nodes, create=False)
    values = ("\n".join(secret_values(opts, key)) + "\n").encode()
    reached = set()

    def wipe(node, cxn):
        reached.add(node.alias)
        sftp = bounded_sftp(cxn, 60)
        private_dir(sftp, PLACE)
        path = f"{PLACE}/values"
        with sftp.open(path, "wb") as fh:  # in a directory only we can enter, from the start
            fh.write(values)
        script = node_script(node, opts, workspace)
        result = cxn.run(command("bash", "-c", script, "teardown", path), hide=True, warn=True, in_stream=False,
                         timeout=opts["check_timeout"])
        out = result.stdout.splitlines()
        if "TEARDOWN END" not in out:
            raise NodeError(f"the teardown stopped early (exit {result.exited}): "
                            f"{(result.stderr.strip().splitlines() or [''])[-1]}")
        left = [ln[5:] for ln in out if ln.startswith("LEFT ")]
        errors = [ln[6:] for ln in out if ln.startswith("ERROR ")]
        if left or errors:
            raise NodeError("; ".join(errors + ([f"a secret value is still in {', '.join(left)}"] if left else [])))
        wiped = [ln[6:] for ln in out if ln.startswith("WIPED ")]
        searched = next((ln[9:] for ln in out if ln.startswith("SEARCHED ")), "")
        return Outcome("changed" if wiped else "ok",
                       f"wiped {len(wiped)} item(s); no secret value left in {searched}")

    session.each("teardown", wipe)
    for node in nodes:
        if node.alias not in reached:  # failed to connect, or earlier in this run
            session.report.write(f"warning: {node.alias} ({node.address}) could not be reached: "
                                 "its secrets could NOT be wiped; it is forgotten here all the same")
    for what in forget_locally(session, dry_run=False):
        session.report.write(f"teardown: forgot {what}")
