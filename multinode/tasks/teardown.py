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

import sys
from pathlib import Path

from invoke import task

from .. import ledger, protocol
from ..connections import NodeError, bounded_sftp
from ..inventory import BadInput
from ..localfiles import drop_block, locked, read_text, write_atomic
from ..paths import TEARDOWN_PLACE as PLACE
from ..paths import repo_name
from ..render import command, render
from ..session import Outcome, checks_arguments, session_of
from ..sshfiles import BLOCK, forget_hosts
from ..staging import cluster_key, git_tokens, private_dir, secret_values

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
    # Given back: a new key at these machines' addresses is then a new rental's (see pins).
    machines = {n.machine for n in session.nodes}
    pinned = [n.alias for n in session.nodes if session.pins.get(n)]
    if pinned:
        gone.append(f"{session.pins.path}: the host key pins of {', '.join(pinned)} (a new key at their "
                    "addresses will be recorded as a new machine's)")
        if not dry_run:
            session.pins.forget(lambda p: p.machine in machines)
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
    state = session.settings.state
    now = secret_values(opts, cluster_key(state, nodes, create=False))  # what the laptop has now
    tokens = [form for token in git_tokens(opts) for form in ledger.forms(token)]
    reached, proven = set(), set()

    def wipe(node, cxn):
        reached.add(node.alias)
        singles, groups = ledger.patterns(ledger.sent(state, node) + now)  # what it was sent, what we have
        files = {"patterns": singles + [line for group in groups for line in group], "singles": singles,
                 "git_tokens": tokens, **{f"group.{i}": group for i, group in enumerate(groups)}}
        sftp = bounded_sftp(cxn, 60)
        private_dir(sftp, PLACE)
        for name, lines in files.items():
            with sftp.open(f"{PLACE}/{name}", "wb") as fh:  # in a directory only we can enter, from the start
                fh.write("".join(f"{line}\n" for line in lines).encode())
        script = node_script(node, opts, workspace)
        result = cxn.run(command("bash", "-c", script, "teardown", PLACE), hide=True, warn=True, in_stream=False,
                         timeout=opts["check_timeout"])
        if not protocol.ended(result.stdout, "teardown"):
            raise NodeError(f"the teardown stopped early (exit {result.exited}): "
                            f"{(result.stderr.strip().splitlines() or [''])[-1]}")
        said = {tag: protocol.said(result.stdout, tag) for tag in ("LEFT", "UNREADABLE", "ERROR", "WIPED", "SEARCHED")}
        problems = said["ERROR"] + [f"{what}{listed(said[tag])}" for tag, what in (
            ("LEFT", "a secret value is still in "), ("UNREADABLE", "could not read: ")) if said[tag]]
        if problems:
            raise NodeError("; ".join(problems))
        proven.add(node.alias)
        ledger.close(state, node)
        searched = next(iter(said["SEARCHED"]), "")
        return Outcome("changed" if said["WIPED"] else "ok", f"wiped {len(said['WIPED'])} item(s); "
                       + (f"no secret value left in {searched}" if not searched.startswith("nothing") else searched))

    session.each("teardown", wipe)
    for node in nodes:
        if node.alias not in reached:  # failed to connect, or earlier in this run
            session.report.write(f"warning: {node.alias} ({node.address}) could not be reached: "
                                 "its secrets could NOT be wiped; it is forgotten here all the same")
        if node.alias not in proven and ledger.sent(state, node):
            session.report.write(f"teardown: what {node.alias} was sent stays listed in "
                                 f"{ledger.entry_path(state, node)} (a later teardown of it searches for it)")
    for what in forget_locally(session, dry_run=False):
        session.report.write(f"teardown: forgot {what}")


def listed(paths, most=5):
    """Up to ``most`` paths, then how many more."""
    return ", ".join(paths[:most]) + (f" (and {len(paths) - most} more)" if len(paths) > most else "")
