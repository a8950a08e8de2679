"""tmux: the ``multinode`` session on the head, one pane per node.

Window ``head`` holds a local shell; then windows of at most 4 panes
(``all-nodes`` when the nodes fit in one, else ``nodes-1``, ``nodes-2``, ...):
the head's pane a local shell, each worker's pane ssh'd to ``workerK`` over
the private network (the aliases of ``head-ssh``). A rerun keeps a session
that already matches the cluster, and what runs in it; a changed cluster or
``--rebuild`` recreates it.
"""

from invoke import Collection, task

from ..paths import TMUX_SESSION as SESSION
from ..paths import worker_name
from .. import protocol
from ..inventory import BadInput
from ..render import command, render
from ..session import Outcome, checks_arguments, session_of

PER_WINDOW = 4


def layout(nodes, per_window=PER_WINDOW):
    """Windows (name, panes) for ``nodes``: the head first, 4 panes at most each."""
    chunks = [nodes[i:i + per_window] for i in range(0, len(nodes), per_window)]
    names = ["all-nodes"] if len(chunks) == 1 else [f"nodes-{i + 1}" for i in range(len(chunks))]
    return [
        {"name": name, "panes": [
            {"alias": n.alias, "private": n.private, "worker": worker_name(n) if n.nid else None} for n in chunk
        ]}
        for name, chunk in zip(names, chunks)
    ]


def signature(windows):
    """The layout in one line: which node is in which pane."""
    return ";".join(w["name"] + ":" + ",".join(f"{p['alias']}@{p['private']}" for p in w["panes"]) for w in windows)


def state(windows):
    """How tmux shows a session built for ``windows``: its signature, then each window and its pane count."""
    return signature(windows) + " " + "".join(f"{name}:{count};" for name, count in
                                             [("head", 1)] + [(w["name"], len(w["panes"])) for w in windows])


def node_count(session, nodes=None, **_):
    """How many nodes get a pane (``--nodes``), checked against the cluster's size."""
    try:
        count = len(session.nodes) if nodes is None else int(nodes)
        if not 1 <= count <= len(session.nodes):
            raise ValueError
    except ValueError:
        raise BadInput(f"bad --nodes {nodes!r}: 1 to {len(session.nodes)} (the cluster's size)") from None
    return count


@checks_arguments(node_count)
@task(help={"nodes": "how many nodes get a pane, head first (default: all of the cluster)",
            "rebuild": "recreate the session even if it matches the cluster (ends what runs in its panes)"})
def tmux(c, nodes=None, rebuild=False):
    """Create the multinode tmux session on the head, a pane per node."""
    session = session_of(c)
    try:
        count = node_count(session, nodes)
    except BadInput as exc:
        raise exc.exit() from None
    chosen = session.nodes[:count]
    left_out = [n.alias for n in chosen if n.alias in session.failed]  # no alias on the head, maybe no shell
    live = [n for n in chosen if n.alias not in session.failed]
    windows = layout(live)
    keep = {state(windows), state(layout(chosen))}  # a node failing this run does not rebuild it
    script = render("tmux.sh.j2", session=SESSION, per_window=PER_WINDOW, windows=windows, rebuild=rebuild,
                    signature=signature(windows), keep=sorted(keep))

    def run(node, cxn):
        out = cxn.run(command("bash", "-c", script), in_stream=False, hide=True,
                      timeout=session.options["check_timeout"]).stdout
        made = [window.split() for window in protocol.said(out, "WINDOW")]
        kept = "KEPT" in out.splitlines()  # a tag without fields
        return Outcome("ok" if kept else "changed", ", ".join(f"{name} ({panes})" for name, panes in made)
                       + (f"; no pane for {', '.join(left_out)} (failed earlier)" if left_out and not kept else ""))

    session.each("tmux", run, only=[session.head])
    if session.head.alias not in session.failed:
        session.report.write(f"attach: ssh -t {session.head.alias} 'tmux attach -t {SESSION}'")


ns = Collection("tmux")
ns.add_task(tmux)
