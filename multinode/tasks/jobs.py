"""jobs, logs, stop: the jobs `fab launch` started, from any laptop, as each node keeps them.

Each node keeps its part of a job (state and output) in the job's directory
(see multinode.jobs), so these tasks need nothing the launching laptop kept.
``jobs`` reads every node's jobs in one command each: a table, or ``--json``;
it notifies of the jobs that ended since this laptop last did. ``logs`` shows
a job's output, each line prefixed by its node's alias; ``--follow`` streams
it until the job ends (Ctrl-C stops following, not the job). ``stop`` marks
the job as being stopped on every node, then stops it there and waits until
its processes are gone; a job that already ended is left as it is.
"""

import json as jsonlib

from invoke import Collection, task

from ..jobops import follow as follow_job, latest, listing, mark_and_stop, notify_ended, query, settled, silence
from ..jobs import as_json, check_name, table
from ..session import Outcome, checks_arguments, named_nodes, number_arg, session_of


@task(name="jobs", help={"json": "print the jobs as JSON (for scripts) instead of the table"})
def jobs_(c, json=False):
    """List the jobs on the cluster: each node's state, the first failure; notify of those that ended."""
    session = session_of(c)
    session.report.quiet = json  # stdout holds only the JSON
    found = listing(session)
    if json:
        print(jsonlib.dumps({"jobs": [as_json(job) for job in found]}, indent=2, ensure_ascii=False))
    else:
        aliases = [n.alias for n in session.nodes if any(n.alias in job.members for job in found)]
        session.report.write(table(found, aliases) if found else "no jobs")
    notify_ended(session, found)


def tail_arg(session, tail=None):
    return number_arg("tail", tail, session.options["tail"], int, 0, 999_999, "lines")


def logs_arguments(session, name=None, node=None, tail=None, **_):
    check_name(name)
    if node:
        named_nodes(session, node, "node")
    tail_arg(session, tail)


@checks_arguments(logs_arguments)
@task(help={"name": "the job (fab jobs lists them)",
            "node": "only these nodes, by alias or address: rental1 (default: every node of the job)",
            "tail": "lines of each node's output (default: multinode.tail, 100)",
            "follow": "then stream it from every node until the job ends (Ctrl-C stops following, not the job)"})
def logs(c, name, node=None, tail=None, follow=False):
    """Show a job's output, each line prefixed by its node; --follow streams it until the job ends."""
    session = session_of(c)
    session.report.quiet = True  # stdout holds the output alone (`fab logs NAME | grep ...`); the rest: stderr
    lines, job = tail_arg(session, tail), latest(session, name, "logs")
    chosen = named_nodes(session, node, "node") if node else session.nodes
    if follow:
        settled(session, job, "logs", follow_job(session, job, lines, chosen))
        return
    targets = [n for n in chosen if n.alias in job.members and n.alias in job.parts]
    width = max((len(n.alias) for n in targets), default=0)
    outputs = session.each("logs", lambda n, cxn: Outcome("ok", value=cxn.run(
        query(session, "tail", name, lines), hide=True, in_stream=False,
        timeout=session.options["check_timeout"]).stdout), quiet=True, only=targets)
    for alias in [n.alias for n in targets if n.alias in outputs]:
        print("".join(f"{alias:<{width}} | {line}\n" for line in outputs[alias].value.splitlines()), end="",
              flush=True)


@checks_arguments(lambda session, name=None, **_: check_name(name))
@task(help={"name": "the job to stop on every node (fab jobs lists them)"})
def stop(c, name):
    """Stop a job on every node (its process group: TERM, then KILL); returns when its processes are gone."""
    session = session_of(c)
    job = latest(session, name, "stop")
    mark_and_stop(session, job, "by fab stop")
    silence(session, job)  # stopped here: no notification of it later


ns = Collection("jobs")
for each in (jobs_, logs, stop):
    ns.add_task(each)
