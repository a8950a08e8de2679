"""What the job tasks do on the nodes, over the run's one connection per node: ask, follow, stop; notify.

Every node answers with templates/jobs.sh.j2 (one command each). `listing`
reads every node's jobs; `follow` streams a job's output from each node, a
line at a time, prefixed with its alias, until the job has ended everywhere
(or Ctrl-C, which stops following, not the job); `stop` marks the job as
being stopped on every node first, then stops it there: a rank that exits
because a peer was stopped a moment earlier still counts as stopped, not as
a failure. `notify_ended` tells the user of each job that ended since this
laptop last did (the record: ``jobs-notified.json`` beside the remembered
cluster), from the laptop alone: apprise URLs may hold tokens.
"""

import functools
import json
import sys
import threading
import time

from invoke.exceptions import Exit

from . import alerts
from .connections import NodeError
from .jobs import ended, first_failure, jobs, message, overall, parse_list
from .localfiles import locked, read_text, write_atomic
from .paths import HEAD_SSH_CONFIG, JOBS
from .render import command, render
from .session import Outcome


def query(session, *words):
    """The command that runs ``jobs.sh WORDS...`` on a node."""
    return command("bash", "-c", script(session.options["jobs"]["lost_after"]), "jobs", *words)


@functools.cache
def script(lost_after):
    return render("jobs.sh.j2", jobs=JOBS, ssh_config=HEAD_SSH_CONFIG, lost_after=lost_after)


def listing(session, name=None, task="jobs", skip=()):
    """[Job] on the cluster's nodes (those named ``name`` only), newest first; the nodes that did not
    answer are failed (named) and, with those in ``skip`` (not asked), their parts read as unreachable,
    or as the head's watchdog saw them."""
    asked = query(session, "list", *([name] if name else []))

    def ask(node, cxn):
        out = cxn.run(asked, hide=True, in_stream=False, timeout=session.options["check_timeout"]).stdout
        return Outcome("ok", value=parse_list(node.alias, out))

    asking = [n for n in session.nodes if n.alias not in skip]
    found = {alias: outcome.value for alias, outcome in session.each(task, ask, quiet=True, only=asking).items()}
    return jobs(found, [n.alias for n in session.nodes if n.alias not in found])


def latest(session, name, task):
    """The newest job called ``name``; none is an error (exit 1, named)."""
    found = [job for job in listing(session, name, task) if job.name == name]
    if not found:
        raise Exit(f"{task}: no job {name!r} on the nodes that answered", code=1)
    return found[0]


class Prefixed:
    """A stream that writes each whole line it is given as ``alias | line`` (the lock keeps lines whole)."""

    lock = threading.Lock()

    def __init__(self, alias, width):
        self.prefix, self.rest = f"{alias:<{width}} | ", ""

    def write(self, text):
        lines = (self.rest + text).split("\n")
        self.rest = lines.pop()
        if lines:
            with self.lock:
                try:
                    sys.stdout.write("".join(f"{self.prefix}{line}\n" for line in lines))
                    sys.stdout.flush()
                except BrokenPipeError:  # `fab logs NAME --follow | head`: the reader left
                    pass

    def flush(self):
        pass

    def close(self):
        if self.rest:
            self.write("\n")


def follow(session, job, lines, nodes=None, task="logs"):
    """Stream ``job``'s output from each of its nodes (or ``nodes``) until it has ended everywhere.

    The head's stream also waits for its watchdog, which by then has a verdict for every node; a node
    whose stream is still open a few seconds later (lost: its connection may never say so) is let go,
    its connection closed. Returns the aliases let go."""
    targets = [n for n in (nodes or session.nodes) if n.alias in job.parts]
    width = max((len(n.alias) for n in targets), default=0)
    head = session.head if session.head in targets else None
    streaming, let_go, head_done, lock = {n.alias for n in targets}, set(), threading.Event(), threading.Lock()
    asked = {n.alias: query(session, "follow", job.name, lines) for n in targets}

    def stream(node, cxn):
        out = Prefixed(node.alias, width)
        try:
            result = cxn.run(asked[node.alias], hide=False, warn=True, in_stream=False, out_stream=out,
                             err_stream=out)
        except Exception:
            if node.alias in let_go:
                return Outcome("ok", "let go")
            raise
        finally:
            out.close()
            with lock:
                streaming.discard(node.alias)
            if node is head:
                head_done.set()
        if node.alias in let_go:
            return Outcome("ok", "let go")
        if result.exited:
            raise NodeError(f"following its output ended with exit {result.exited}")
        return Outcome("ok")

    def let_go_late():
        head_done.wait()
        for _ in range(30):
            with lock:
                if not streaming:
                    return
            time.sleep(0.1)
        with lock:
            let_go.update(streaming)
        for node in targets:
            if node.alias in let_go:
                session.disconnect(node)

    if head is not None:
        threading.Thread(target=let_go_late, daemon=True).start()
    try:
        session.each(task, stream, quiet=True, only=targets)
    except Exit:
        if session.interrupted:
            raise Exit(f"\nstopped following {job.name}; the job goes on: `fab logs {job.name} --follow`, "
                       f"`fab jobs`, `fab stop {job.name}`", code=130) from None
        raise
    return let_go


def mark_and_stop(session, job, reason, task="stop"):
    """Stop ``job`` on every node that has a part of it: each marked first, then stopped; returns when its
    processes are gone. {alias: Outcome} of the nodes that answered."""
    nodes = [n for n in session.nodes if n.alias in job.members or n.alias in job.parts]
    mark = query(session, "mark", job.name, reason)
    stop = query(session, "stop", job.name, reason)
    timeout = session.options["jobs"]["grace"] + session.options["jobs"]["lost_after"] + 60
    session.each(task, lambda node, cxn: Outcome("ok", value=cxn.run(mark, hide=True, in_stream=False,
                                                                      timeout=timeout)), quiet=True, only=nodes)

    def stopping(node, cxn):
        before = job.parts.get(node.alias)
        cxn.run(stop, hide=True, in_stream=False, timeout=timeout)
        if node.alias not in job.members:
            return Outcome("ok", "its watchdog ended")
        if before is not None and before.state.get("exit"):
            return Outcome("ok", "had ended already")
        return Outcome("changed", "stopped: its processes are gone")

    return session.each(task, stopping, only=nodes)


def notified_path(session):
    return session.settings.state.with_name("jobs-notified.json")


def notified(session):
    """This laptop's record: {"since": time, "jobs": {id: when notified}}; a new one starts now (the jobs
    that ended before it are never notified: a new laptop is not told of a cluster's whole past)."""
    try:
        record = json.loads(read_text(notified_path(session)) or "null")
    except ValueError:
        record = None
    if not isinstance(record, dict) or not isinstance(record.get("jobs"), dict):
        record = {"since": time.time(), "jobs": {}}
        write_atomic(notified_path(session), json.dumps(record), mode=0o600, backup=False)
    return record


def silence(session, job):
    """Record ``job`` as notified of (stopped from this laptop: the user knows)."""
    with locked(notified_path(session)):
        record = notified(session)
        record["jobs"].setdefault(job.id, time.time())
        write_atomic(notified_path(session), json.dumps(record), mode=0o600, backup=False)


def notify_ended(session, found, quiet=False):
    """Notify of each job in ``found`` that has ended since this laptop's record began and was not
    notified of yet, and record it; return them. Two runs at once notify once (the record is locked)."""
    due = []
    with locked(notified_path(session)):
        record = notified(session)
        for job in found:
            end = max(job.times("ended"), default=time.time())
            if ended(job) and job.id and job.id not in record["jobs"] and end >= record["since"]:
                due.append(job)
                record["jobs"][job.id] = time.time()
        if due:
            write_atomic(notified_path(session), json.dumps(record), mode=0o600, backup=False)
    for job in due:
        ok, title, body = message(job)
        if not quiet:
            session.report.write(body)
        for line in alerts.send(session.options["notify"], title, body, ok):
            session.report.write(line)
    return due


def settled(session, job, task, skip=()):
    """``job`` read again once followed to its end (``skip``: the nodes let go), said and notified of;
    the node that failed it first is failed (named in the summary: exit 1)."""
    again = next((j for j in listing(session, job.name, task, skip) if j.id == job.id), job)
    state = overall(again)
    _, _, body = message(again)
    session.report.write(f"\n{body}" if ended(again) else f"\njob {again.name}: {state}")
    notify_ended(session, [again], quiet=True)
    failure = first_failure(again)
    if failure and ended(again) and session.find(failure[0]):
        session.fail(session.find(failure[0]), task, f"job {again.name}: {failure[1]}")
    return again
