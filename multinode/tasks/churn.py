"""replace, add, remove: change the cluster's machines while the others run on.

The machine behind an alias is swapped (``replace``), machines join with the
next free numbers (``add``), or leave (``remove``): the new ones get the full
treatment, the nodes that stay only what membership changes (the cluster key's
``from=``, ``/etc/hosts``, the head's aliases and panes), the ones leaving are
wiped as ``teardown`` wipes them. Their Ray and tmux keep running; aliases are
never renumbered. `membership` does the work; every argument is checked first
(exit 2, nothing touched). Run again after an interruption, a task completes
what it started.
"""

from invoke import Collection, task

from ..inventory import BadInput, parse_node
from ..giveback import asks, confirmed
from ..membership import change, head_flag, joining_nodes, leaving_as, member, moving_head, new_machine
from ..session import checks_arguments, session_of

HEAD = "allow the head (rental0) to be changed: Ray then restarts on every node"


def replace_arguments(session, alias=None, node=None, head=False, yes=False, **_):
    """(the member replaced, its new machine); (the member, None) to finish a replace that was interrupted."""
    if not alias or not node:
        raise BadInput("replace needs ALIAS and NODE: fab replace rental2 PUBLIC:PRIVATE")
    asks("replace", yes)
    old = member(session, alias, "alias")
    head_flag(session, [old], head, "replacing")
    if parse_node(node.strip(), old.nid).same_machine(old):
        if not any(n.nid == old.nid for n in session.leaving):
            raise BadInput(f"bad node {node.strip()!r}: that is {old.alias}'s machine already; give the new one")
        return old, None  # its old machine is still listed as leaving: finish the replace
    new = new_machine(session, node, old.nid)
    if old is session.head and new.head_only:
        raise BadInput(f"bad node {node.strip()!r}: the head needs a public address; :PRIVATE is a worker the head reaches")
    return old, new


def add_arguments(session, nodes=None, **_):
    if not nodes:
        raise BadInput("add needs nodes: fab add PUBLIC:PRIVATE[,PUBLIC:PRIVATE...]")
    return joining_nodes(session, nodes)


def remove_arguments(session, nodes=None, yes=False, head=False, **_):
    if not nodes:
        raise BadInput("remove needs nodes: fab remove rental3[,rental4]")
    names = [v for v in str(nodes).split(",") if v.strip()]
    pending = [leaving_as(session, name) for name in names]
    gone = [member(session, name, "node") for name, left in zip(names, pending) if left is None]
    if len(set(n.alias for n in gone)) == len(session.nodes):
        raise BadInput("bad node list: remove every node? use teardown to give the whole cluster back")
    head_flag(session, gone, head, "removing")
    staying = [n for n in session.nodes if n not in gone]
    if staying[0].head_only:
        raise BadInput(f"bad node list: the new head {staying[0].alias} has no public address")
    asks("remove", yes)
    return gone


@checks_arguments(replace_arguments)
@task(auto_shortflags=False, help={"alias": "the member whose machine is replaced (rental2, or its address)",
            "node": "the new machine, as -H writes a node: [USER@]PUBLIC[:PORT]:PRIVATE (:PRIVATE: behind the head)",
            "yes": "do not ask (needed without a terminal)", "head": HEAD})
def replace(c, alias, node, yes=False, head=False):
    """Replace the machine behind an alias with a new one; wipe the old one."""
    session = session_of(c)
    try:
        old, new = replace_arguments(session, alias, node, head, yes)
    except BadInput as exc:
        raise exc.exit() from None
    if new is None:  # finishing a replace that was interrupted: the member is the new machine
        change(c, session, "replace", session.nodes, joining=[old], redo=[old.alias])
        return
    session.report.write(f"replace: {old.alias} {old.address} -> {new.address} (private {new.private})")
    members = [new if n is old else n for n in session.nodes]
    moving_head(session, "replace", members)
    if not yes and not confirmed(f"Replace {old.alias} by {new.address} and give back {given([old])}?"):
        raise BadInput("replace: not confirmed; nothing was changed").exit()
    change(c, session, "replace", members, joining=[new], leaving=[old], redo=[old.alias])


@checks_arguments(add_arguments)
@task(help={"nodes": "the new machines, as -H writes nodes: PUBLIC:PRIVATE[,PUBLIC:PRIVATE...], @FILE or -"})
def add(c, nodes):
    """Add machines to the cluster with the next free numbers."""
    session = session_of(c)
    try:
        joining = add_arguments(session, nodes)
    except BadInput as exc:
        raise exc.exit() from None
    session.report.write("add: " + ", ".join(f"{n.alias} {n.address} (private {n.private})" for n in joining))
    change(c, session, "add", session.nodes + joining, joining=joining)


@checks_arguments(remove_arguments)
@task(auto_shortflags=False, help={"nodes": "the members that leave (aliases or addresses, comma-separated)",
            "yes": "do not ask (needed without a terminal)", "head": HEAD})
def remove(c, nodes, yes=False, head=False):
    """Remove nodes from the cluster: wipe them, forget them, keep the rest running."""
    session = session_of(c)
    try:
        gone = remove_arguments(session, nodes, yes, head)
    except BadInput as exc:
        raise exc.exit() from None
    members = [n for n in session.nodes if n not in gone]
    moving_head(session, "remove", members)
    if gone and not yes and not confirmed(f"Remove {given(gone)}?"):
        raise BadInput("remove: not confirmed; nothing was changed").exit()
    change(c, session, "remove", members, leaving=gone)


def given(nodes):
    """``nodes`` as the question names them, and what giving them back does."""
    names, them = ", ".join(f"{n.alias} ({n.address})" for n in nodes), "it" if len(nodes) == 1 else "them"
    return f"{names}: wipe multinode's secrets on {them} and forget {them} here"


ns = Collection("churn")
for each in (replace, add, remove):
    ns.add_task(each)
