"""Telling the user something happened, away from the terminal: apprise URLs and the desktop.

Shared by the tasks that notify (``notify``: the cluster is ready; the job
tasks: a job ended). Every apprise URL in ``multinode.notify.urls`` (ntfy,
Slack, Discord, Pushover, e-mail, a JSON webhook, ...) and, where
``notify.desktop`` asks, a desktop notification where ``notify-send``
(Linux) or ``osascript`` (macOS) exists. Everything is sent from the laptop:
URLs often hold tokens, so they never go to a node and are never printed.
"""

import os
import shutil
import subprocess

from .inventory import BadInput


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


def sender(urls):
    """An apprise sender for ``urls``; a URL apprise cannot read is `BadInput`, named by its
    number and scheme alone (never the URL: it may hold a token)."""
    import apprise  # 0.14 s to import: only when notifying, not on every fab run

    sending = apprise.Apprise()
    for number, each in enumerate(urls, 1):
        if not sending.add(each):
            raise BadInput(f"bad apprise URL #{number} (scheme {each.split(':', 1)[0]!r})")
    return sending


def send(conf, title, body, ok, urls=(), sending=None):
    """Send ``title``/``body`` to ``conf``'s URLs (plus ``urls``) and the desktop.

    ``conf``: the ``notify`` config; ``sending``: a `sender` made earlier (its URLs
    checked before anything else ran). Returns the lines that say what was done."""
    import apprise

    every = list(conf["urls"]) + list(urls)
    said = []
    if every:
        sending = sending or sender(every)
        sent = sending.notify(title=title, body=body,
                              notify_type=apprise.NotifyType.SUCCESS if ok else apprise.NotifyType.FAILURE)
        said.append(f"notify: {len(every)} channel(s) {'notified' if sent else 'NOT all notified (see above)'}")
    if conf["desktop"] and desktop(title, body):
        said.append("notify: desktop notification shown")
    return said
