"""hostkeys: record the host keys of new machines; refuse changed keys of known ones.

Keys are pinned (see `pins`): a machine whose key was recorded, in any
cluster, and whose key changed is refused (both fingerprints shown) until the
user says it was reinstalled (``--reinstalled rental2``) or forgets it
(``--forget ADDR``; teardown forgets the machines it gives back). A node seen
for the first time, or an address whose machine is not pinned (a new rental
on a recycled address), gets its key recorded, the old fingerprint shown as
replaced.

known_hosts is edited line by line: only the lines (or, on a line naming
several hosts, the names) of our nodes' addresses are touched, hashed
entries included; every other byte stays. A node whose recorded entries
already hold its current key is left as it is.
"""

from invoke import Collection, task

from ..connections import HINT, NodeError, fetch_host_key
from ..inventory import BadInput
from ..localfiles import locked, read_text, write_atomic
from ..pins import key_text, shown
from ..session import Outcome, checks_arguments, named_nodes, session_of
from ..sshfiles import fingerprint, forget_hosts, keys_of, known_host_entries, update_known_hosts


def reinstalled_nodes(session, value):
    """The nodes named by ``--reinstalled`` (aliases or addresses, or ``all``), checked."""
    if not value:
        return set()
    jump = session.jump
    if str(value).strip() == "all":
        return {n.alias for n in session.nodes + ([jump] if jump else [])}
    names = [v.strip() for v in str(value).split(",")]
    hop = {name for name in names if jump is not None and name in (jump.alias, jump.public, jump.address)}
    rest = ",".join(name for name in names if name not in hop)
    also = f", {jump.alias}, or all" if jump is not None else ", or all"
    return {n.alias for n in named_nodes(session, rest, "reinstalled", also=also)} | ({jump.alias} if hop else set())


def forgotten_pins(session, value):
    """The pins ``--forget`` names (public addresses, ``[addr]:port``), checked: each must be pinned."""
    names = [v.strip() for v in str(value).split(",") if v.strip()]
    found = []
    for name in names:
        match = [p for p in session.pins.pins if name in (p.public, p.address)]
        if not match:
            raise BadInput(f"bad --forget {name!r}: no machine at that address is pinned (in {session.pins.path})")
        found += [p for p in match if p not in found]
    if not found:
        raise BadInput("bad --forget: give addresses, e.g. --forget 203.0.113.7,[203.0.113.8]:40022")
    return found


def hostkeys_arguments(session, reinstalled=None, forget=None, **_):
    if forget is not None:
        if reinstalled:
            raise BadInput("--forget and --reinstalled do not go together: forget first, then run hostkeys")
        return forgotten_pins(session, forget)
    return reinstalled_nodes(session, reinstalled)


def forget_pins(session, pins):
    """Forget ``pins`` and their machines' known_hosts entries; connect to nothing."""
    session.remember = False
    gone = session.pins.forget(lambda p: p in pins)
    path = session.settings.known_hosts
    addresses = {p.address for p in gone}
    still = {p.address for p in session.pins.pins}  # another machine on the same address keeps its entry
    with locked(path):
        text = read_text(path)
        kept = "".join(forget_hosts(text.splitlines(keepends=True), addresses - still))
        if kept != text:
            write_atomic(path, kept)
    for pin in gone:
        session.report.write(f"hostkeys: forgot the pin of {pin.address} (private {pin.private}, {shown(pin.key)}): "
                             "the next key seen there is recorded as a new machine's")


def record(session, nodes, entries, accept):
    """Read the current key of each of ``nodes`` (through its hop, see `reach`), refuse a pinned
    machine's changed key (unless ``accept`` names it), record and pin the others, a line each."""
    timeout = session.settings.connect_timeout
    path = session.settings.known_hosts

    def check(node):
        pinned = session.pins.get(node)
        key = fetch_host_key(node, timeout, kind=pinned.split(" ", 1)[0] if pinned else None,
                             sock=session.socket_to(node))
        old = keys_of(entries, node.address)
        if pinned is None or pinned == key_text(key) or node.alias in accept:
            return Outcome("ok", value=(key, old))
        raise NodeError(f"host key of {node.address} changed: multinode pinned {shown(pinned)}, "
                        f"the node offers {fingerprint(key)}; " + HINT.format(alias=node.alias))

    found = session.each("hostkeys", check, connect=False, quiet=True, only=nodes)
    by_alias = {n.alias: n for n in nodes}
    keys = {by_alias[alias].address: out.value[0] for alias, out in found.items()}
    with locked(path):
        text, changed = update_known_hosts(read_text(path), keys)
        if any(changed.values()):
            write_atomic(path, text)
    session.pins.pin([(by_alias[alias], out.value[0]) for alias, out in found.items()])
    for alias, out in found.items():
        node, (key, old) = by_alias[alias], out.value
        where = f" (read through {session.head.alias})" if node.head_only else ""
        if not changed[node.address]:
            session.report.line("hostkeys", node, "ok", fingerprint(key) + where)
            continue
        replaced = [k for k in old if k.get_base64() != key.get_base64()]
        session.report.line("hostkeys", node, "changed", f"recorded {fingerprint(key)}" + (
            f" (replaced {', '.join(fingerprint(k) for k in replaced)})" if replaced else "") + where)


@checks_arguments(lambda session, **kwargs: hostkeys_arguments(session, **kwargs))
@task(help={"reinstalled": "nodes whose new host key to accept (aliases or addresses, comma-separated, or all): "
                           "machines you reinstalled, whose pinned key changed",
            "forget": "forget the pinned keys of these public addresses (comma-separated; [ADDR]:PORT for a port): "
                      "machines you gave back; connects to nothing",
            "jump": "a jump host in front of every node, [USER@]HOST[:PORT] (none: no jump host; default: "
                    "multinode.jump, else the remembered cluster's): its key is pinned as a node's"})
def hostkeys(c, reinstalled=None, forget=None, jump=None):
    """Record each new node's SSH host key; refuse a pinned machine whose key changed.

    Every other task refuses a node whose key is unknown or has changed. The jump host's key
    comes first, then the nodes' (through it), then the keys of workers without a public
    address, read through the head (whose key is then pinned).
    """
    session = session_of(c, nodes=forget is None)
    try:
        chosen = hostkeys_arguments(session, reinstalled, forget)
    except BadInput as exc:
        raise exc.exit() from None
    if forget is not None:
        forget_pins(session, chosen)
        return
    entries = known_host_entries(session.settings.known_hosts)
    if session.jump is not None:
        record(session, [session.jump], entries, chosen)
    record(session, [n for n in session.scoped if not n.head_only], entries, chosen)
    behind = [n for n in session.scoped if n.head_only]
    if behind:
        record(session, behind, entries, chosen)


hostkeys.needs_nodes = lambda kwargs: kwargs.get("forget") is None  # --forget works without a cluster

ns = Collection("hostkeys")
ns.add_task(hostkeys, default=True)
