"""head-ssh: worker1.. aliases on the head, over the private network, proven.

One rendered script, run on the head in one round trip: it records each
worker's host key (fetched over the private network, accepted only when it
is the key the laptop verified for that machine), writes ``Host workerK``
entries (a marked block of the head's ``~/.ssh/config``; the cluster key is
the identity) and then runs ``ssh workerK hostname`` for every worker.
"""

import re

from invoke import Collection, task

from .connections import known_host_entries, names_host
from .render import command, render
from .session import Outcome, session_of

# ssh-keyscan -t names for the key algorithms paramiko reports.
KEYSCAN_TYPE = {"ssh-ed25519": "ed25519", "ssh-rsa": "rsa", "ecdsa-sha2-nistp256": "ecdsa",
                "ecdsa-sha2-nistp384": "ecdsa", "ecdsa-sha2-nistp521": "ecdsa"}
LINE_RE = re.compile(r"^(HOSTKEY|REACH) (\S+) (ok|failed) ?(.*)$")


def worker_name(node):
    return f"worker{node.nid}"


def verified_keys(path, nodes):
    """{alias: the key the laptop's known_hosts holds for that node}."""
    entries = known_host_entries(path)
    keys = {}
    for node in nodes:
        for entry in entries:
            if any(names_host(name, node.address) for name in entry.hostnames):
                keys[node.alias] = entry.key
    return keys


@task(name="head-ssh")
def head_ssh(c):
    """Give the head worker1.. ssh aliases over the private network and prove each works."""
    session = session_of(c)
    head, workers = session.head, session.nodes[1:]
    if not workers:
        session.report.write("head-ssh: a single node has no workers")
        return
    keys = verified_keys(session.settings.known_hosts, workers)
    for node in workers:
        if node.alias not in keys:
            session.fail(node, "head-ssh", f"no verified host key for {node.address} on the laptop: run hostkeys")
    workers = [w for w in workers if w.alias in keys]
    # Scan only the key types the laptop verified: each extra type is a full handshake per worker.
    key_types = sorted({KEYSCAN_TYPE.get(k.get_name(), k.get_name()) for k in keys.values()})
    script = render("head_ssh.sh.j2", head=head, timeout=session.settings.connect_timeout, key_types=key_types, workers=[
        {"alias": w.alias, "name": worker_name(w), "private": w.private, "user": w.user,
         "key": f"{keys[w.alias].get_name()} {keys[w.alias].get_base64()}",
         "fingerprint": keys[w.alias].fingerprint} for w in workers
    ])

    def run(node, cxn):
        out = cxn.run(command("bash", "-c", script), in_stream=False, hide=True,
                      timeout=session.options["check_timeout"]).stdout
        changed = next((ln.split(" ", 1)[1] for ln in out.splitlines() if ln.startswith("CHANGED ")), "none")
        return Outcome("ok" if changed == "none" else "changed", value=out,
                       detail=f"{worker_name(workers[0])}..{worker_name(workers[-1])} in ~/.ssh/config"
                       + ("" if changed == "none" else f" (wrote {changed.strip()})"))

    found = session.each("head-ssh", run, only=[head])
    if head.alias not in found:
        return
    by_alias = {w.alias: w for w in workers}
    for kind, alias, status, detail in (m.groups() for m in map(LINE_RE.match, found[head.alias].value.splitlines()) if m):
        node = by_alias[alias]
        if status == "failed":
            session.fail(node, "head-ssh", f"{head.alias} -> {worker_name(node)} ({node.private}): {detail}")
        elif kind == "REACH":
            session.report.line("head-ssh", node, "ok", f"{head.alias} -> {worker_name(node)} ({node.private}): {detail}")


ns = Collection("headssh")
ns.add_task(head_ssh)
