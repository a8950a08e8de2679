"""Churn: machines join, leave or are swapped while the rest of the cluster runs on.

`change` is the one way membership changes (``fab replace``, ``add``,
``remove``), in an order that keeps the cluster whole at every step:

1. the machines joining get the full treatment (host key pinned, user
   detected, bootstrap, Ray joining the running head); a failure there leaves
   every other node as it was, and the change stops (`add`: without that one);
2. the nodes that stay get what membership changes, nothing more: the cluster
   key's ``from=`` line and the ``/etc/hosts`` lines (their ``ssh`` and ``hosts``
   steps, run from the stage: their own script, Ray and tmux are untouched);
3. the head: every worker's alias, the new ones proven; tmux panes for the
   changed nodes only; the laptop's ``rentalN`` aliases;
4. the change is remembered (``cluster.json``, atomically), the machines
   leaving listed in it until they are wiped;
5. the machines leaving are wiped as ``teardown`` wipes (proof included) and
   their host keys forgotten; one that cannot be reached is forgotten with a
   warning (exit 1) and the members get a new cluster key (it kept the old
   one), one not proven clean stays listed.

Each task is restartable: run again after Ctrl-C or a dropped link, the same
command finds the change half done (its new member in ``cluster.json``, or the
machine still listed as leaving) and completes it. A new head (``--head``)
restarts Ray everywhere: the nodes that stay get the new head's address first,
then rejoin it.
"""

import io

from . import ledger
from .connections import NodeError
from .giveback import Wipe, forget_machines
from .inventory import BadInput, parse_node
from .nodescript import node_script, parse_steps, send_and_run
from .pasted import host_specs
from .paths import venv_bin
from .raycluster import check_ray
from .session import Outcome
from .sshfiles import write_ssh_config
from .staging import cluster_key, key_values, staged_files

MEMBER_STEPS = ("ssh", "hosts")  # what a node that stays changes: the cluster key's from=, /etc/hosts


def member(session, name, what):
    """The member ``name`` (alias or address) names; `BadInput` naming the members otherwise."""
    node = session.find(name.strip())
    if node is None:
        raise BadInput(f"bad {what} {name.strip()!r}: not a member of this cluster "
                       f"({', '.join(n.alias for n in session.nodes)}, or their addresses)")
    return node


def leaving_as(session, name):
    """The machine still leaving the cluster (a change that did not finish) that ``name`` names, or None."""
    return next((n for n in session.leaving if name.strip() in (n.alias, n.public, n.address)), None)


def new_machine(session, spec, nid, others=()):
    """A machine to join as node ``nid``, checked: well formed, at no member's (nor ``others``') address."""
    prefix = session.settings.alias_prefix
    node = parse_node(spec.strip(), nid, prefix)
    for known in list(session.nodes) + list(others):
        if node.address == known.address or node.private == known.private:
            shown = node.host if node.address == known.address else node.private
            raise BadInput(f"bad node {spec.strip()!r}: {shown} is already {known.alias}'s address")
    node.via = session.head.address if node.head_only else ""
    return node


def joining_nodes(session, value):
    """``fab add``'s machines, numbered on from the highest number in use (or still leaving): never renumbering."""
    specs = host_specs(str(value))
    if not specs or specs == [""]:
        raise BadInput("bad node list: expected PUBLIC:PRIVATE[,PUBLIC:PRIVATE...]")
    first = max(n.nid for n in session.nodes + session.leaving) + 1
    nodes = []
    for i, spec in enumerate(specs):
        nodes.append(new_machine(session, spec, first + i, nodes))  # at no member's nor an earlier one's address
    return nodes


def head_flag(session, nodes, head, what):
    """Refuse a change of the head without ``--head``."""
    if session.head in nodes and not head:
        raise BadInput(f"{what} the head {session.head.alias} restarts Ray on every node: give --head to do it")


def moving_head(session, task, members):
    """Say, before anything is done, what a new head means (nothing when the head stays)."""
    if members[0] is not session.head:
        session.report.write(f"{task}: the head moves to {members[0].alias} ({members[0].address}): Ray restarts "
                             "on every node, and the tmux session starts anew there")


def distinct(nodes):
    """``nodes`` without repeats, in order."""
    return [n for i, n in enumerate(nodes) if n not in nodes[:i]]


def change(c, session, task, members, joining=(), leaving=(), redo=()):
    """Make ``members`` the cluster (`joining` its new machines), give ``leaving`` back (see the module)."""
    opts = session.options
    before = list(session.nodes)
    leaving = distinct(list(leaving) + session.leaving)  # and what an earlier change left to wipe
    new_head = members[0] is not before[0]
    session.remember = False  # nothing is remembered before the change is known
    session.nodes = list(members)
    session.admit(list(joining) + leaving)
    set_up = distinct([members[0], *joining]) if new_head else list(joining)
    staying = [n for n in members if n not in set_up]
    if new_head:
        for node in members:  # the workers without a public address are reached through the new head
            node.via = members[0].address if node.head_only else ""
    if set_up and not bring_up(c, session, task, set_up, joining, before, new_head, staying):
        return
    if not new_head:
        refresh(session, staying)
    head_side(c, session, [n for n in joining if n in session.nodes], redo, everything=new_head)
    session.leaving = leaving
    session.remember = True
    session.save()  # the change is known: remembered, the machines leaving listed until they are wiped
    still, unwiped = give_back(session, leaving)
    if unwiped:  # they keep the cluster key (refused from their addresses already): a new one for the members
        session.report.write(f"{task}: {', '.join(n.alias for n in unwiped)} kept the cluster key: the members get a "
                             "new one")
        refresh(session, session.nodes, renew=True)
    session.leaving = still
    if not set_up and len(session.nodes) > 1 and opts["ray"]["enabled"]:
        check_ray(session, opts, venv_bin(opts, "python"))


def bring_up(c, session, task, nodes, joining, before, new_head, staying):
    """The full treatment for ``nodes`` alone: host keys, login user, bootstrap (Ray joins the head).
    A new head's workers get its address between the login and the bootstrap, to rejoin it.
    False when the change stops here: the machines joining failed (an `add` goes on with those that came)."""
    session.scope = {n.alias for n in nodes}
    session.run_task(c, "hostkeys")
    session.run_task(c, "detect-user")
    if new_head and session.head.alias not in session.failed:
        refresh(session, staying, own_script=True)
    session.run_task(c, "bootstrap", tail=0)  # a failed node's errors are shown all the same
    came = [n for n in joining if n.alias not in session.failed]
    if (new_head and session.head.alias in session.failed) or (joining and not came) or (
            task == "replace" and came != joining):
        if new_head:
            session.report.write(f"{task}: the new head could not be set up; run the same command again once it "
                                 "is fixed (the nodes that stay may have its address already)")
            return False
        # The cluster stays as it was (nothing remembered, the laptop's aliases put back); the new machine is named.
        write_ssh_config(session.settings.ssh_config, before, session.settings.identity, session.jump,
                         session.settings.known_hosts)
        session.report.write(f"{task}: nothing changed on the other nodes; run the same command again once the new "
                             "machine is fixed, or give another")
        return False
    session.nodes = [n for n in session.nodes if n not in joining or n in came]
    return True


def refresh(session, nodes, own_script=False, renew=False):
    """The ``ssh`` and ``hosts`` steps of ``nodes``, rendered for the cluster as it is now, run from
    the stage with the cluster key's files alone. ``own_script``: the node keeps the new script
    (a new head: Ray's rejoin runs it); ``renew``: a new cluster key."""
    if not nodes:
        return
    opts = session.options
    state = session.settings.state
    key = cluster_key(state, session.nodes, renew=renew)
    files, missing = staged_files(opts, key, session.nodes)
    files = {name: data for name, data in files.items() if name.startswith("cluster_key")}  # nothing else

    def run(node, cxn):
        ledger.record(state, node, key_values(key))  # before a byte of it leaves
        out = io.StringIO()
        script = node_script(node, session.nodes, opts, missing, session.nodes)
        result = send_and_run(cxn, script, files, out, opts["check_timeout"], only=MEMBER_STEPS,
                              own=own_script)
        steps = parse_steps(result.stdout)
        failed = [f"{name}: {detail}" for name, status, detail in steps if status == "failed"]
        if result.exited != 0 or failed:
            last = (out.getvalue().strip().splitlines() or [""])[-1]
            raise NodeError("; ".join(failed) or f"exited {result.exited}: {last}")
        changed = [detail for name, status, detail in sorted(steps, key=lambda step: MEMBER_STEPS.index(step[0]))
                   if status == "changed"]
        return Outcome("changed" if changed else "ok", "; ".join(changed) or "cluster key and /etc/hosts as wanted")

    session.each("members", run, only=nodes)


def head_side(c, session, joining, redo, everything=False):
    """The head: every worker's alias (the new ones proven, all after a new head), the panes, the laptop's aliases."""
    s = session.settings
    write_ssh_config(s.ssh_config, session.nodes, s.identity, session.jump, s.known_hosts)
    session.scope = None if everything else {n.alias for n in joining}
    session.run_task(c, "head-ssh")  # no worker left: their aliases go
    session.scope = None
    redone = sorted({*redo} & {n.alias for n in session.nodes})
    session.run_task(c, "tmux", redo=",".join(redone) or None)


def give_back(session, leaving):
    """Wipe ``leaving`` and forget their host keys: (what is still to wipe: reached, not proven clean;
    what could not be reached, forgotten unwiped)."""
    if not leaving:
        return [], []
    wipe = Wipe(session)
    session.each("wipe", wipe, only=leaving)
    wipe.warn_left(leaving)
    for node in leaving:
        if node.alias not in wipe.reached:
            session.failed.setdefault(node.alias, ("wipe", "could not be reached: its secrets could NOT be wiped"))
    gone = [n for n in leaving if n.alias in wipe.proven or n.alias not in wipe.reached]
    for what in forget_machines(session, gone, keep=session.nodes):
        session.report.write(f"{gone[0].alias if len(gone) == 1 else 'wipe'}: forgot {what}")
    still = [n for n in leaving if n not in gone]
    for node in still:
        session.report.write(f"{node.alias}: not proven clean, still listed as leaving the cluster: run the same "
                             "command again (or teardown) to wipe it")
    return still, [n for n in leaving if n.alias not in wipe.reached]
