"""notify: tell the user the cluster is ready, or which nodes are not.

The terminal always; every apprise URL in ``multinode.notify.urls`` and a
desktop notification (see `multinode.alerts`, which the job tasks share).
Without a ``verify`` earlier in the same run, notify runs its checks first.
URLs often hold tokens: they are never printed.
"""

from pathlib import Path

from invoke import Collection, task

from .. import alerts
from ..inventory import BadInput
from ..session import checks_arguments, session_of
from ..checks import run_checks


def message(session):
    """(ok, title, body) for the state of this run's nodes."""
    total = len(session.scoped)
    if not session.failed:
        return True, "Cluster Ready", f"{total} node(s) setup and verified"
    failed = ", ".join(f"{alias} ({task}: {reason})" for alias, (task, reason) in session.failed.items())
    return False, "Cluster NOT ready", f"{len(session.failed)} of {total} node(s) failed: {failed}"


def extra_urls(session, url=None, **_):
    """``--url``: one apprise URL, or ``@FILE`` holding one per line (a URL in argv is
    visible to every process on the laptop; a file, or notify.urls, is not)."""
    if not url:
        return []
    if not url.startswith("@"):
        return [url]
    path = Path(url[1:]).expanduser()
    try:
        return [ln.strip() for ln in path.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    except OSError as exc:
        raise BadInput(f"cannot read --url file {str(path)!r}: {exc.strerror}") from None


@checks_arguments(extra_urls)
@task(help={"url": "one more apprise URL besides multinode.notify.urls, or @FILE with one per line "
                   "(better: a URL in a command line is visible to other processes; keep tokens in a file "
                   "or in notify.urls)"})
def notify(c, url=None):
    """Tell the user whether the cluster is ready (terminal, apprise URLs, desktop)."""
    session = session_of(c)
    opts = session.options
    try:
        conf = opts["notify"]
        urls = extra_urls(session, url)
        sending = alerts.sender(list(conf["urls"]) + urls)
    except BadInput as exc:
        raise exc.exit() from None
    if session.checks is None:
        run_checks(session, opts, quiet=True)
    ok, title, body = message(session)
    session.report.write(f"\n{title}: {body}")
    for line in alerts.send(conf, title, body, ok, urls, sending):
        session.report.write(line)


ns = Collection("notify")
ns.add_task(notify)
