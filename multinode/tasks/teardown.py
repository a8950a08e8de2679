"""teardown: give the machines back without leaving your secrets on them.

On every reachable node at once, one remote script (``templates/teardown.sh.j2``):
stop Ray and our tmux sessions, remove what multinode put there that is
secret (the ``~/.env`` and ``~/.netrc`` blocks, the Hugging Face token,
``~/key.txt``, the cluster key and its ``authorized_keys`` line, chezmoi's
config and the files it decrypted, our tokens' lines in git's credential
stores, staging leftovers; ``--workspace``: the workspace too), then prove it:
every value the machine was sent (the `ledger`) and every secret the laptop
has now is searched for, whole, as root where the node allows it; what to
look for travels by SFTP into a directory only the login user can enter
(never a command line). A file still holding one fails the node, named
(never the value); so does a file the search could not read.

Then on the laptop, for every node, reachable or not: the ``rentalN``
aliases leave ``~/.ssh/config``, the nodes' entries leave ``known_hosts``,
their host key pins are forgotten (said so), the remembered cluster and its
key are deleted. A node that could not be reached is forgotten too, with a
warning that its secrets are still there; a node not proven clean keeps its
ledger entry.
"""

from pathlib import Path

from invoke import task

from ..giveback import Wipe, asks, confirmed, forget_machines, node_script, removes
from ..inventory import BadInput
from ..localfiles import drop_block, locked, read_text, write_atomic
from ..session import checks_arguments, session_of
from ..sshfiles import BLOCK


def teardown_arguments(session, yes=False, dry_run=False, **_):
    asks("teardown", yes or dry_run)


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
    keys = forget_machines(session, session.nodes + session.leaving, dry_run=dry_run, label="the nodes' host keys")
    files = []
    key = Path(s.state).with_name("cluster_key")
    for path in (Path(s.state), key, Path(f"{key}.pub"), key.with_name("cluster_key.cluster")):
        if path.exists():
            files.append(str(path))
            if not dry_run:
                path.unlink()
    known = [what for what in keys if what.startswith(f"{s.known_hosts}:")]
    return gone + known + files + [what for what in keys if what not in known]  # the pins last


@checks_arguments(teardown_arguments)
@task(help={"yes": "do not ask (needed without a terminal)",
            "dry_run": "list what would go, on the nodes and here; connect to nothing, change nothing",
            "workspace": "remove the workspace on the nodes too (your repo, its venv)"})
def teardown(c, yes=False, dry_run=False, workspace=False):
    """Wipe multinode's secrets from every node, prove none is left, and forget the cluster here."""
    session = session_of(c)
    opts = session.options
    nodes = session.nodes + session.admit(session.leaving)  # machines a churn left to wipe: given back too
    if dry_run:
        session.remember = False
        for node in nodes:
            items = removes(node_script(node, opts, workspace))
            session.report.line("teardown", node, "ok", "would remove: " + "; ".join(items)
                                + (f": {opts['workspace']}" if workspace else ""))
        for what in forget_locally(session, dry_run=True):
            session.report.write(f"teardown: would forget {what}")
        return
    if not yes and not confirmed(f"Tear down {', '.join(n.alias for n in nodes)}: wipe multinode's secrets on them "
                                 "and forget them here?"):
        raise BadInput("teardown: not confirmed; nothing was changed").exit()
    session.remember = False  # the cluster is forgotten below, not remembered again
    wipe = Wipe(session, workspace)
    session.each("teardown", wipe, only=nodes)
    wipe.warn_left(nodes)
    for what in forget_locally(session, dry_run=False):
        session.report.write(f"teardown: forgot {what}")
