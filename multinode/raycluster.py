"""The Ray cluster seen from the head: which nodes are alive in it.

Asked of the GCS (its node table) with the workspace venv's Python, in
one remote command that waits up to ``ray.wait`` seconds for late joiners.
verify's ray-cluster check runs the same query, without waiting.
"""

from invoke.exceptions import UnexpectedExit

from . import protocol
from .render import command, program
from .session import Outcome

# Run on the head: ADDRESS WAIT PRIVATE...; prints the alive members, exits 1 if one
# is missing after WAIT seconds (templates/ray_members.py: the GCS asked directly,
# without importing ray, else through Ray).
RAY_MEMBERS = program("ray_members.py")


def on_head(session, task, python, source, tag, *args, timeout):
    """Run the Python program ``source`` (a Ray driver) on the head: what it printed after ``TAG``.

    None when the head failed (named, with the program's exit and last line)."""
    head = session.head

    def ask(node, cxn):
        result = cxn.run(command(python, "-c", source, *args), hide=True, warn=True, in_stream=False, timeout=timeout)
        found = protocol.tagged(result.stdout, tag)
        if found is None:  # the program itself failed (no venv, no Ray): say how
            raise UnexpectedExit(result)
        return Outcome("ok", value=found)

    found = session.each(task, ask, quiet=True, only=[head])
    return found[head.alias].value if head.alias in found else None


def members(session, opts, venv_python, wait):
    """The private addresses Ray on the head lists as alive, waiting up to ``wait`` s for all; None if unknown."""
    want = [n.private for n in session.alive()]  # failed nodes are named already
    alive = on_head(session, "ray", venv_python, RAY_MEMBERS, "RAY_MEMBERS",
                    f"{session.head.private}:{opts['ray']['port']}", wait, *want, timeout=wait + opts["check_timeout"])
    return None if alive is None else set(alive)


def check_ray(session, opts, venv_python, rejoin=None, first_wait=20):
    """From the head: does Ray list every node? Missing nodes fail the run.

    A worker can join a head that is restarting in the same run (its old GCS
    still answered) and then drop out: ``rejoin(nodes)`` restarts the Ray of
    the nodes missing after ``first_wait`` seconds, once, before the full wait.
    """
    head = session.head
    port, wait = opts["ray"]["port"], opts["ray"]["wait"]
    alive = members(session, opts, venv_python, min(first_wait, wait) if rejoin else wait)
    if alive is None:
        return
    missing = [n for n in session.alive() if n.private not in alive and n is not head]
    if missing and rejoin:
        rejoin(missing)
        alive = members(session, opts, venv_python, wait)
        if alive is None:
            return
    want = [n.private for n in session.alive()]
    for node in session.alive():
        if node.private not in alive:
            session.fail(node, "ray", f"not in the Ray cluster of {head.private}:{port} after {wait}s")
    session.report.line("ray", head, "ok" if len(alive & set(want)) == len(want) else "incomplete",
                        f"{len(alive & set(want))} of {len(want)} node(s) in the Ray cluster")
