"""notify: tell the user the cluster is ready, or which nodes are not.

The terminal always; every apprise URL in ``multinode.notify.urls`` (ntfy,
Slack, Discord, Pushover, e-mail, a JSON webhook, ...); and a desktop
notification where ``notify-send`` (Linux) or ``osascript`` (macOS) exists.
Without a ``verify`` earlier in the same run, notify runs its checks first.
URLs often hold tokens: they are never printed.
"""

import os
import shutil
import subprocess
from pathlib import Path

from invoke import Collection, task

from ..inventory import BadInput
from ..session import checks_arguments, session_of
from ..checks import run_checks


def message(session):
    """(ok, title, body) for the state of this run's nodes."""
    total = len(session.nodes)
    if not session.failed:
        return True, "Cluster Ready", f"{total} node(s) setup and verified"
    failed = ", ".join(f"{alias} ({task}: {reason})" for alias, (task, reason) in session.failed.items())
    return False, "Cluster NOT ready", f"{len(session.failed)} of {total} node(s) failed: {failed}"


def desktop(title, body):
    """A desktop notification where this machine has a way to show one."""
    if shutil.which("notify-send") and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        cmd = ["notify-send", title, body]
    elif shutil.which("osascript"):
        cmd = ["osascript", "-e", "on run argv", "-e", "display notification (item 2 of argv) with title (item 1 of argv)",
               "-e", "end run", title, body]
    else:
        return False
    return subprocess.run(cmd, capture_output=True, timeout=10).returncode == 0


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
    import apprise  # 0.14 s to import: only when notifying, not on every fab run

    session = session_of(c)
    opts = session.options
    try:
        conf = opts["notify"]
        urls = list(conf["urls"]) + extra_urls(session, url)
        sender = apprise.Apprise()
        for number, each in enumerate(urls, 1):
            if not sender.add(each):  # never print a URL: it may hold a token
                raise BadInput(f"bad apprise URL #{number} (scheme {each.split(':', 1)[0]!r})")
    except BadInput as exc:
        raise exc.exit() from None
    if session.checks is None:
        run_checks(session, opts, quiet=True)
    ok, title, body = message(session)
    session.report.write(f"\n{title}: {body}")
    if urls:
        sent = sender.notify(title=title, body=body,
                             notify_type=apprise.NotifyType.SUCCESS if ok else apprise.NotifyType.FAILURE)
        session.report.write(f"notify: {len(urls)} channel(s) {'notified' if sent else 'NOT all notified (see above)'}")
    if conf["desktop"] and desktop(title, body):
        session.report.write("notify: desktop notification shown")


ns = Collection("notify")
ns.add_task(notify)
