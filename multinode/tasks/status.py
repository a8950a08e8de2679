"""status: what every node is doing now, in one table: GPUs, jobs, disk, /dev/shm, load, Ray.

Each node answers in one round trip (templates/status.sh.j2) over the invocation's one
connection to it: each GPU's utilization, memory, temperature and power as nvidia-smi
gives them, the jobs whose state says running, the workspace filesystem's free space,
/dev/shm's size, the load average, whether its raylet (and, on the head, the GCS) runs.
A row per node, its GPUs summarized, the worst value of each column in colour on a
terminal (multinode/statusview.py). ``--watch`` asks again every ``--interval`` seconds on
the same connections and redraws the table in place (rich; without a terminal, the table
is printed once per refresh) until Ctrl-C, which ends it with exit 0. ``--json`` for
scripts (with ``--watch``, a JSON object a line, a line per refresh). A node that does
not answer is named, in its row and in the summary (exit 1); the others go on.
"""

import json as jsonlib
import os
import sys
import time

from invoke import Collection, task
from invoke.exceptions import Exit

from .. import paths, protocol, statusview
from ..connections import NodeError
from ..render import command, render
from ..session import Outcome, checks_arguments, number_arg, session_of

ANSWER_WITHIN = 30  # seconds a node's status may take (its nvidia-smi alone gets 10)


class ReaderGone(Exception):
    """Whoever read our standard output left: nothing more to show."""


class Unseen:
    """No progress view: while watching, the table itself is the view."""

    def start(self, node):
        pass

    def finish(self, node, status):
        pass


def interval_arg(session, interval=None, **_):
    return number_arg("interval", interval, session.options["status"]["interval"], float, 0.5, 3600, "seconds")


def ask_all(session, progress=None):
    """{alias: NodeNow} of the nodes that answered; each that did not fails, named."""
    opts = session.options
    script = render("status.sh.j2")

    def ask(node, cxn):
        cmd = command("bash", "-c", script, "status", opts["workspace"], paths.JOBS, node is session.head)
        result = cxn.run(cmd, hide=True, warn=True, in_stream=False, timeout=min(ANSWER_WITHIN, opts["check_timeout"]))
        if not protocol.ended(result.stdout, "status"):
            last = (result.stderr.strip().splitlines() or [f"exit {result.exited}"])[-1]
            raise NodeError(f"its status script stopped before its end: {last}")
        return Outcome("ok", value=statusview.parse(result.stdout))

    return {alias: o.value for alias, o in session.each("status", ask, quiet=True, progress=progress).items()}


def table(session, nows):
    """The rows of this refresh (statusview.rows), a node that failed named with its reason."""
    failed = {alias: reason for alias, (_, reason) in session.failed.items()}
    ray_expected = len(session.nodes) > 1 and session.options["ray"]["enabled"]
    return statusview.rows(session.nodes, nows, failed, ray_expected)


def document(session, nows):
    """The refresh as JSON: each node's status, or why it has none."""
    return {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ok": not session.failed,
            "nodes": {n.alias: statusview.as_json(n, nows.get(n.alias), session.failed.get(n.alias, (None, None))[1])
                      for n in session.nodes}}


def show(session, nows, json, watching, tty):
    """Print one refresh (the live view redraws its own: see `follow`)."""
    if tty:
        from rich.console import Console

        Console(file=sys.stdout).print(statusview.rich_table(table(session, nows)))
        return
    if json:
        text = jsonlib.dumps(document(session, nows), ensure_ascii=False, indent=None if watching else 2) + "\n"
    else:
        text = (f"status at {time.strftime('%H:%M:%S')}\n" if watching else "") + statusview.plain(
            table(session, nows)) + ("\n\n" if watching else "\n")
    try:
        sys.stdout.write(text)  # in one write: a Ctrl-C never cuts a refresh in two
        sys.stdout.flush()
    except BrokenPipeError:  # `fab status --watch | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit (Python's advice)
        raise ReaderGone from None


def follow(session, nows, seconds, json, tty):
    """Ask every ``seconds`` and show each refresh until Ctrl-C (then return: exit 0, not 130)."""
    live = None
    title = lambda: f"status at {time.strftime('%H:%M:%S')}, every {seconds:g} s (Ctrl-C to stop)"  # noqa: E731
    try:
        if tty and not json:
            from rich.console import Console
            from rich.live import Live

            live = Live(statusview.rich_table(table(session, nows), title()), console=Console(file=sys.stdout),
                        auto_refresh=False, redirect_stdout=True, redirect_stderr=False)
            live.start(refresh=True)
        else:
            show(session, nows, json, True, tty)
        due = time.monotonic() + seconds  # refreshes start every `seconds`, however long one takes
        while True:
            time.sleep(max(0.0, due - time.monotonic()))
            due = time.monotonic() + seconds
            nows = ask_all(session, progress=Unseen())
            if live is not None:
                live.update(statusview.rich_table(table(session, nows), title()), refresh=True)
            else:
                show(session, nows, json, True, tty)
    except (KeyboardInterrupt, ReaderGone):
        pass
    except Exit as exc:  # Ctrl-C while the nodes were asked: the session closed their connections
        if exc.code != 130:
            raise
    finally:
        if live is not None:
            live.stop()


def status_arguments(session, interval=None, **_):
    interval_arg(session, interval)


@checks_arguments(status_arguments)
@task(help={"watch": "refresh the table in place every --interval seconds until Ctrl-C",
            "interval": "seconds between refreshes with --watch (default: multinode.status.interval, 5)",
            "json": "print the status as JSON for scripts (with --watch: one JSON object a line per refresh)"})
def status(c, watch=False, interval=None, json=False):
    """Show what every node is doing now: its GPUs, running jobs, disk, /dev/shm, load and Ray."""
    session = session_of(c)
    seconds = interval_arg(session, interval)
    session.report.quiet = json  # stdout holds only the JSON
    tty = sys.stdout.isatty() and not json
    nows = ask_all(session)
    if watch:
        follow(session, nows, seconds, json, tty)
    else:
        try:
            show(session, nows, json, False, tty)
        except ReaderGone:
            pass


ns = Collection("status")
ns.add_task(status)
