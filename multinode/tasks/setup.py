"""setup: the whole workflow in one command, ending with the node table.

hostkeys, detect-user, bootstrap, head-ssh, verify, tmux (then bandwidth and
smoke where ``multinode.setup`` asks for them), notify: one run,
one connection per node, a failing node skipped by what follows while the
others finish; then each node's result and the commands to reach the cluster.
``--nodes`` (or ``--failed``: those that failed in the last run) sets up some
nodes alone: the others are not contacted, the head only for its worker
aliases and tmux panes.
"""

from invoke import Collection, task

from ..paths import TMUX_SESSION, venv_bin
from ..report import columns
from ..inventory import BadInput
from ..session import checks_arguments, named_nodes, session_of


def final_report(session, opts):
    rows = [("node", "public", "private", "interface", "user", "result")]
    for n in session.nodes:
        failed = session.failed.get(n.alias)
        public = (f"{n.address} ({n.resolved})" if n.resolved else n.address) if n.public else f"via {session.head.alias}"
        if session.jump is not None and n.public:
            public += f" via {session.jump.alias}"
        result = f"FAILED in {failed[0]}: {failed[1]}" if failed else "ok" if n in session.scoped else "not set up in this run"
        rows.append((n.alias, public, n.private, session.interfaces.get(n.alias) or "?", n.user or "?", result))
    lines = ["", "Cluster"] + ["  " + line for line in columns(rows)]
    head = session.head.alias
    lines += ["", "Access", f"  ssh {head}"]
    if len(session.nodes) > 1 and opts["ray"]["enabled"]:
        lines.append(f"  ssh {head} '{venv_bin(opts, 'ray')} status'")
    lines.append(f"  ssh -t {head} 'tmux attach -t {TMUX_SESSION}'")
    session.report.write("\n".join(lines))


def chosen_nodes(session, nodes=None, failed=False):
    """The aliases ``--nodes`` or ``--failed`` choose (None: every node); `BadInput` when bad."""
    if nodes is not None and failed:
        raise BadInput("--nodes and --failed do not go together")
    if failed:
        return {n.alias for n in session.nodes if n.nid in session.failed_before}
    return None if nodes is None else {n.alias for n in named_nodes(session, nodes, "nodes")}


def setup_arguments(session, tail=None, reinstalled=None, nodes=None, failed=False, **_):  # --jump: the executor's
    """Each composed task checks its own arguments."""
    session.check_task("bootstrap", tail=tail)
    session.check_task("hostkeys", reinstalled=reinstalled)
    chosen_nodes(session, nodes, failed)


@checks_arguments(setup_arguments)
@task(help={"tail": "lines of each node's bootstrap log to show (default: multinode.tail, 100)",
            "reinstalled": "nodes whose new host key to accept (as for hostkeys): machines you reinstalled",
            "jump": "a jump host in front of every node, [USER@]HOST[:PORT] (as for hostkeys)",
            "nodes": "set up these nodes only (aliases or addresses, comma-separated); the others are not "
                     "contacted, the head only for its aliases and panes",
            "failed": "set up the nodes that failed in the last run only (remembered with the cluster)"})
def setup(c, tail=None, reinstalled=None, jump=None, nodes=None, failed=False):
    """Do everything: hostkeys, detect-user, bootstrap, head-ssh, verify, tmux, notify (bandwidth, smoke if asked)."""
    session = session_of(c)
    opts = session.options
    try:
        session.scope = chosen_nodes(session, nodes, failed)
    except BadInput as exc:
        raise exc.exit() from None
    if session.scope is not None and not session.scope:
        session.report.write("setup --failed: no node failed in the last run; nothing to do")
        return
    run = session.run_task  # the tasks of this run's collection, by name: composed, not imported
    run(c, "hostkeys", reinstalled=reinstalled)
    run(c, "detect-user")
    run(c, "bootstrap", tail=tail)
    run(c, "head-ssh")
    run(c, "verify")
    run(c, "tmux")
    if opts["setup"]["bandwidth"]:
        run(c, "bandwidth")
    if opts["setup"]["smoke"]:
        run(c, "smoke")
    run(c, "notify")
    final_report(session, opts)


ns = Collection("setup")
ns.add_task(setup)
