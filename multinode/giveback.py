"""Give machines back: wipe what multinode put on them and prove no secret is left.

One remote script per machine (``templates/teardown.sh.j2``): stop Ray and our
tmux sessions, remove what multinode put there that is secret (the ``~/.env``
and ``~/.netrc`` blocks, the Hugging Face token, ``~/key.txt``, the cluster key
and its ``authorized_keys`` line, chezmoi's config and the files it decrypted,
our tokens' lines in git's credential stores, staging leftovers; with
``workspace``: the workspace too), then prove it: every value the machine was
sent (the `ledger`) and every secret the laptop has now is searched for, whole,
as root where the node allows it; what to look for travels by SFTP into a
directory only the login user can enter (never a command line). A file still
holding one fails the machine, named (never the value); so does a file the
search could not read. ``teardown`` gives back the whole cluster; ``remove``
and ``replace`` the machines leaving it.
"""

import sys

from . import ledger, protocol
from .connections import NodeError, bounded_sftp
from .inventory import BadInput
from .localfiles import locked, read_text, write_atomic
from .paths import TEARDOWN_PLACE as PLACE
from .paths import repo_name
from .render import command, render
from .session import Outcome
from .sshfiles import forget_hosts
from .staging import cluster_key, git_tokens, private_dir, secret_values


def asks(task, yes):
    """A task that wipes asks first: without a terminal to ask on, ``--yes`` is needed (`BadInput`)."""
    if not (yes or sys.stdin.isatty()):
        raise BadInput(f"{task} asks before it wipes: give --yes when there is no terminal to ask on")


def confirmed(question):
    """The user's yes to ``question`` (…? [y/N]) on the terminal; no answer is no."""
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def node_script(node, opts, workspace):
    """The teardown script of ``node``."""
    return render("teardown.sh.j2", alias=node.alias, workspace=opts["workspace"],
                  repo_name=repo_name(opts["repo"]), workspace_too=workspace)


def removes(script):
    """What a teardown script takes away: its "# Removes:" lines."""
    return [line[len("# Removes: "):].rstrip(".") for line in script.splitlines() if line.startswith("# Removes: ")]


class Wipe:
    """``Wipe(session)(node, cxn)``: wipe one machine and prove it clean (`NodeError` when not).

    ``reached``: the aliases it connected to; ``proven``: those proven clean (their ledger
    entry closed)."""

    def __init__(self, session, workspace=False):
        self.session, self.workspace = session, workspace
        self.state = session.settings.state
        opts = session.options
        self.now = secret_values(opts, cluster_key(self.state, session.nodes, create=False))  # what the laptop has
        self.tokens = [form for token in git_tokens(opts) for form in ledger.forms(token)]
        self.reached, self.proven = set(), set()

    def __call__(self, node, cxn):
        opts = self.session.options
        self.reached.add(node.alias)
        singles, groups = ledger.patterns(ledger.sent(self.state, node) + self.now)  # what it was sent, what we have
        files = {"patterns": singles + [line for group in groups for line in group], "singles": singles,
                 "git_tokens": self.tokens, **{f"group.{i}": group for i, group in enumerate(groups)}}
        sftp = bounded_sftp(cxn, 60)
        private_dir(sftp, PLACE)
        for name, lines in files.items():
            with sftp.open(f"{PLACE}/{name}", "wb") as fh:  # in a directory only we can enter, from the start
                fh.write("".join(f"{line}\n" for line in lines).encode())
        script = node_script(node, opts, self.workspace)
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
        self.proven.add(node.alias)
        ledger.close(self.state, node)
        searched = next(iter(said["SEARCHED"]), "")
        return Outcome("changed" if said["WIPED"] else "ok", f"wiped {len(said['WIPED'])} item(s); "
                       + (f"no secret value left in {searched}" if not searched.startswith("nothing") else searched))

    def warn_left(self, nodes):
        """Say, for each of ``nodes`` not reached or not proven clean, what stays."""
        report = self.session.report
        for node in nodes:
            if node.alias not in self.reached:  # failed to connect, or earlier in this run
                report.write(f"warning: {node.alias} ({node.address}) could not be reached: "
                             "its secrets could NOT be wiped; it is forgotten here all the same")
            if node.alias not in self.proven and ledger.sent(self.state, node):
                report.write(f"{node.alias}: what it was sent stays listed in {ledger.entry_path(self.state, node)} "
                             "(a later teardown of it searches for it)")


def forget_machines(session, nodes, keep=(), dry_run=False, label=None):
    """Take ``nodes``' host keys off the laptop: their known_hosts entries (but an address one of
    ``keep`` still uses) and their pins. What went, as lines to say."""
    s, gone = session.settings, []
    addresses = {n.address for n in nodes} - {n.address for n in keep}
    with locked(s.known_hosts):
        text = read_text(s.known_hosts)
        kept = "".join(forget_hosts(text.splitlines(keepends=True), addresses))
        if kept != text:
            gone.append(f"{s.known_hosts}: " + (label or f"the host keys of {', '.join(sorted(addresses))}"))
            if not dry_run:
                write_atomic(s.known_hosts, kept)
    # Given back: a new key at these machines' addresses is then a new rental's (see pins).
    machines = {n.machine for n in nodes}
    pinned = [n.alias for n in nodes if session.pins.get(n)]
    if pinned:
        gone.append(f"{session.pins.path}: the host key pins of {', '.join(pinned)} (a new key at their "
                    "addresses will be recorded as a new machine's)")
        if not dry_run:
            session.pins.forget(lambda p: p.machine in machines)
    return gone


def listed(paths, most=5):
    """Up to ``most`` paths, then how many more."""
    return ", ".join(paths[:most]) + (f" (and {len(paths) - most} more)" if len(paths) > most else "")
