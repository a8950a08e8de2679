"""tmux: the ``multinode`` session on the head, one pane per node.

Window ``head`` holds a local shell; then windows of at most 4 panes
(``all-nodes`` when the nodes fit in one, else ``nodes-1``, ``nodes-2``, ...):
the head's pane a local shell, each worker's pane ssh'd to ``workerK`` over
the private network (the aliases of ``head-ssh``). Each node's pane carries
its node (pane option ``@multinode_node``, ``ALIAS@PRIVATE``).

A rerun first looks at the session: one that already matches the cluster is
kept as it is. One whose node panes all carry their node changes pane by pane:
a node gone loses its pane, a new node gets one, a replaced machine's pane (or
one named by ``--redo``) starts anew in place; every other pane, and what runs
in it, stays. Any other session, or ``--rebuild``, is recreated whole.
"""

import re
from collections import Counter

from invoke import Collection, task

from ..paths import TMUX_SESSION as SESSION
from ..paths import worker_name
from .. import protocol
from ..inventory import BadInput
from ..render import command, render
from ..session import Outcome, checks_arguments, named_nodes, session_of

PER_WINDOW = 4
NODE_WINDOW = re.compile(r"all-nodes|nodes-[0-9]+")


def pane_of(node, head):
    """A node's pane: its node, and for a worker its alias on the head (the head's pane is a local shell)."""
    return {"alias": node.alias, "private": node.private, "worker": None if node is head else worker_name(node)}


def layout(nodes, per_window=PER_WINDOW, head=None):
    """Windows (name, panes) for ``nodes``: the head (``nodes[0]`` unless given) first, 4 panes at most each."""
    head = nodes[0] if head is None else head
    chunks = [nodes[i:i + per_window] for i in range(0, len(nodes), per_window)]
    names = ["all-nodes"] if len(chunks) == 1 else [f"nodes-{i + 1}" for i in range(len(chunks))]
    return [{"name": name, "panes": [pane_of(n, head) for n in chunk]} for name, chunk in zip(names, chunks)]


def signature(windows):
    """The layout in one line: which node is in which pane."""
    return ";".join(w["name"] + ":" + ",".join(f"{p['alias']}@{p['private']}" for p in w["panes"]) for w in windows)


def state(windows):
    """How tmux shows a session built for ``windows``: its signature, then each window and its pane count."""
    return signature(windows) + " " + "".join(f"{name}:{count};" for name, count in
                                             [("head", 1)] + [(w["name"], len(w["panes"])) for w in windows])


def seen_session(out):
    """The look's answer: (its pane lines, [{pane, window, name, node}], @multinode_layout); None: no session."""
    lines = out.splitlines()
    mine = [line for line in lines if line.startswith("pane ")]
    if not mine:
        return None
    panes = [dict(zip(("pane", "window", "node", "name"), line.split(" ", 4)[1:])) for line in mine]
    return "\n".join(mine), panes, next((line[7:] for line in reversed(lines) if line.startswith("layout ")), "")


def window_list(panes):
    """[(window id, name, pane count)] in the session's order."""
    counts = Counter(p["window"] for p in panes)
    names = {p["window"]: p["name"] for p in panes}
    return [(w, names[w], counts[w]) for w in dict.fromkeys(p["window"] for p in panes)]


def free(taken, k):
    """The first window name ``nodes-K`` from ``k`` on that is not ``taken``."""
    while f"nodes-{k}" in taken:
        k += 1
    return f"nodes-{k}"


def plan(panes, want, keep, redo, head, per_window=PER_WINDOW):
    """What turns a session of tagged ``panes`` into one pane per node of ``want`` (nodes, in order):
    kill, restart (in place) and grow (windows gaining panes), renamed windows and what was done, in
    words. None when some node pane has no tag (a session this version did not make). ``keep``: aliases
    whose panes stay as they are (failed earlier); ``redo``: aliases whose panes start anew."""
    node_windows = {p["window"] for p in panes if p.get("node") or NODE_WINDOW.fullmatch(p["name"])}
    mine = [p for p in panes if p["window"] in node_windows]
    if not mine or not all(p.get("node") for p in mine):
        return None
    by_alias = {n.alias: n for n in want}
    kill, restart, placed = [], [], set()
    for p in mine:
        alias, _, private = p["node"].partition("@")
        node = by_alias.get(alias)
        if alias in placed or (node is None and alias not in keep):
            kill.append(p)
            continue
        placed.add(alias)
        if node is not None and alias not in keep and (private != node.private or alias in redo):
            restart.append(dict(pane_of(node, head), pane=p["pane"]))
    if len(kill) == len(panes):
        return None  # nothing would be left to keep: rebuilt
    gone = {p["pane"] for p in kill}
    windows = [{"id": w, "name": name, "count": n, "panes": []}
               for w, name, n in window_list([p for p in mine if p["pane"] not in gone])]
    for node in (n for n in want if n.alias not in placed):  # in the last window with room, else a new one
        room = [w for w in windows if w["count"] + len(w["panes"]) < per_window]
        if not room:
            name = free({w["name"] for w in windows}, len(windows) + 1) if windows else "all-nodes"
            room = [{"id": None, "name": name, "count": 0, "panes": []}]
            windows += room
        room[-1]["panes"].append(pane_of(node, head))
    renamed = []
    for w in windows:  # all-nodes no more once there are two
        if w["name"] == "all-nodes" and len(windows) > 1:
            w["name"] = free({v["name"] for v in windows}, 1)
            renamed += [w] if w["id"] else []
    done = [("added", [p["alias"] for w in windows for p in w["panes"]]),
            ("removed", list(dict.fromkeys(p["node"].partition("@")[0] for p in kill))),
            ("restarted", [p["alias"] for p in restart])]
    return {"kill": [p["pane"] for p in kill], "restart": restart, "renamed": renamed,
            "grow": [w for w in windows if w["panes"]],
            "tile": sorted({p["window"] for p in kill} & {w["id"] for w in windows}),
            "done": "; ".join(f"{word} {', '.join(aliases)}" for word, aliases in done if aliases)}


def tmux_arguments(session, nodes=None, redo=None, **_):
    """How many nodes get a pane (``--nodes``, checked against the cluster's size), and ``--redo``'s aliases."""
    try:
        count = len(session.nodes) if nodes is None else int(nodes)
        if not 1 <= count <= len(session.nodes):
            raise ValueError
    except ValueError:
        raise BadInput(f"bad --nodes {nodes!r}: 1 to {len(session.nodes)} (the cluster's size)") from None
    if isinstance(redo, (list, tuple)):
        redo = ",".join(redo)
    return count, {n.alias for n in named_nodes(session, redo, "redo")} if redo else set()


def decide(seen, live, kept, failed, redo, head, rebuild):
    """What to do to the session ``seen`` (`seen_session`): None to keep it as it is, else a plan
    (``build``: recreated whole). ``kept``: the states of a session that already holds the cluster."""
    build = {"build": True, "grow": [dict(w, id=None) for w in layout(live, head=head)], "done": ""}
    if seen is None or rebuild:
        return build
    if not redo and seen[2] + " " + "".join(f"{name}:{n};" for _, name, n in window_list(seen[1])) in kept:
        return None
    todo = plan(seen[1], live, failed, redo, head)
    if todo is None:
        return build
    if not todo["done"] and not todo["renamed"] and seen[2] == signature(layout(live, head=head)):
        return None
    return todo


@checks_arguments(tmux_arguments)
@task(help={"nodes": "how many nodes get a pane, head first (default: all of the cluster)",
            "rebuild": "recreate the session even if it matches the cluster (ends what runs in its panes)",
            "redo": "nodes whose panes start anew (their ssh reconnects), comma-separated aliases"})
def tmux(c, nodes=None, rebuild=False, redo=None):
    """Create the multinode tmux session on the head, a pane per node."""
    session = session_of(c)
    try:
        count, again = tmux_arguments(session, nodes, redo)
    except BadInput as exc:
        raise exc.exit() from None
    chosen = session.nodes[:count]
    left_out = [n.alias for n in chosen if n.alias in session.failed]  # no alias on the head, maybe no shell
    live = [n for n in chosen if n.alias not in session.failed]
    windows = layout(live, head=session.head)
    keep = {state(windows), state(layout(chosen, head=session.head))}  # a node failing this run does not rebuild it
    timeout = session.options["check_timeout"]

    def run(node, cxn):
        look = render("tmux.sh.j2", session=SESSION, per_window=PER_WINDOW, look=True)
        seen = seen_session(cxn.run(command("bash", "-c", look), in_stream=False, hide=True, timeout=timeout).stdout)
        todo = decide(seen, live, keep, set(left_out), again, session.head, rebuild)
        if todo is None:
            return Outcome("ok", ", ".join(f"{name} ({n})" for _, name, n in window_list(seen[1])))
        todo = {"build": False, "kill": [], "restart": [], "renamed": [], "tile": [], **todo}
        script = render("tmux.sh.j2", session=SESSION, per_window=PER_WINDOW, look=False,
                        signature=signature(windows), seen=seen[0] if seen else "", **todo)
        out = cxn.run(command("bash", "-c", script), in_stream=False, hide=True, timeout=timeout).stdout
        said = [", ".join("{} ({})".format(*window.rsplit(" ", 1)) for window in protocol.said(out, "WINDOW"))]
        placed = set() if todo["build"] else {p["node"].partition("@")[0] for p in seen[1]}
        missing = [alias for alias in left_out if alias not in placed]
        said += [todo["done"]] if todo["done"] else []
        said += [f"no pane for {', '.join(missing)} (failed earlier)"] if missing else []
        changed = todo["build"] or todo["done"] or todo["renamed"]  # else: only its layout recorded anew
        return Outcome("changed" if changed else "ok", "; ".join(said))

    session.each("tmux", run, only=[session.head])
    if session.head.alias not in session.failed:
        session.report.write(f"attach: ssh -t {session.head.alias} 'tmux attach -t {SESSION}'")


ns = Collection("tmux")
ns.add_task(tmux)
