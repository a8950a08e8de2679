"""head-ssh: worker1.. aliases on the head, over the private network, proven.

One rendered script, run on the head in one round trip: it records each
worker's host key under its private address (the key the laptop verified for
that machine: nothing is scanned or accepted blindly), writes ``Host workerK``
entries (in ``~/.ssh/multinode_config``, a file of ours, never the user's
``~/.ssh/config``; the cluster key is the identity) and then runs ``ssh workerK hostname`` for every worker, with
strict host key checking: a private address that leads to another machine
(swapped addresses, say) fails there. A run on some nodes (``setup --nodes``,
the churn tasks) writes every worker's alias and proves those nodes' alone.
"""

from invoke import Collection, task

from .. import protocol
from ..paths import HEAD_KNOWN_HOSTS, HEAD_SSH_CONFIG, worker_name
from ..render import command, render
from ..session import Outcome, session_of
from ..sshfiles import fingerprint, verified_keys

@task(name="head-ssh")
def head_ssh(c):
    """Give the head worker1.. ssh aliases over the private network and prove each works."""
    session = session_of(c)
    head, workers = session.head, session.nodes[1:]
    if not workers and session.scope is None:
        session.report.write("head-ssh: a single node has no workers")
        return
    if not workers:  # a run on some nodes (`remove` of the last workers): none of their aliases stays
        no_aliases(session, head)
        return
    keys = verified_keys(session.settings.known_hosts, workers)
    for node in workers:
        if node.alias not in keys:
            session.fail(node, "head-ssh", f"no verified host key for {node.address} on the laptop: run hostkeys")
    # A worker's login user is known once it was reached (detect-user, or remembered);
    # else log in now, which finds it.
    unknown = [w for w in workers if not w.user]
    if unknown:  # each() leaves out the failed ones, those without a key included
        session.each("head-ssh", lambda node, cxn: Outcome("ok"), quiet=True, only=unknown)
    session.skip_failed("head-ssh", workers)
    workers = [w for w in workers if w.alias not in session.failed]
    if not workers:
        return
    script = render("head_ssh.sh.j2", head=head, timeout=session.settings.connect_timeout, known_hosts=HEAD_KNOWN_HOSTS,
                    ssh_config=HEAD_SSH_CONFIG,
                    kex=session.options["head_ssh"]["kex_algorithms"], workers=[
        {"alias": w.alias, "name": worker_name(w), "private": w.private, "user": w.user,
         "keys": [f"{k.get_name()} {k.get_base64()}" for k in keys[w.alias]],
         "prove": w in session.scoped} for w in workers  # the run's nodes: another is not contacted
    ])

    def run(node, cxn):
        out = cxn.run(command("bash", "-c", script), in_stream=False, hide=True,
                      timeout=session.options["check_timeout"]).stdout
        changed, plain = (next(iter(protocol.said(out, tag)), "none") for tag in ("WROTE", "PLAIN"))
        where = f"~/.ssh/{HEAD_SSH_CONFIG}" + (f" (plain `ssh workerK` through {plain})" if plain != "none" else
                                          f" (no root: `ssh -F ~/.ssh/{HEAD_SSH_CONFIG} workerK`)")
        return Outcome("ok" if changed == "none" else "changed", value=out,
                       detail=f"{'..'.join(dict.fromkeys([worker_name(workers[0]), worker_name(workers[-1])]))} in {where}"
                       + ("" if changed == "none" else f"; wrote{changed}"))

    found = session.each("head-ssh", run, only=[head])
    if head.alias not in found:
        return
    by_alias = {w.alias: w for w in workers}
    for reached in protocol.said(found[head.alias].value, "REACH"):
        alias, status, detail = (reached.split(" ", 2) + [""])[:3]
        node = by_alias[alias]
        hop = f"{head.alias} -> {worker_name(node)} ({node.private})"
        if status == "ok":
            session.report.line("head-ssh", node, "ok", f"{hop}: {detail}")
        elif "Host key verification failed" in detail:
            session.fail(node, "head-ssh", f"{hop}: that address offers another host key than the one verified "
                                           f"for {node.address} ({', '.join(fingerprint(k) for k in keys[alias])}): is it the right private address?")
        else:
            session.fail(node, "head-ssh", f"{hop}: {detail}")


def no_aliases(session, head):
    """Take the worker aliases, their host keys and the drop-in off the head: no worker is left."""
    script = render("head_ssh.sh.j2", head=head, timeout=session.settings.connect_timeout, workers=[], kex="",
                    known_hosts=HEAD_KNOWN_HOSTS, ssh_config=HEAD_SSH_CONFIG)

    def run(node, cxn):
        out = cxn.run(command("bash", "-c", script), in_stream=False, hide=True,
                      timeout=session.options["check_timeout"]).stdout
        removed = next(iter(protocol.said(out, "WROTE")), "none")
        return Outcome("ok", "no worker aliases") if removed == "none" else Outcome(
            "changed", f"no worker left: removed{removed}")

    session.each("head-ssh", run, only=[head])


ns = Collection("headssh")
ns.add_task(head_ssh)
