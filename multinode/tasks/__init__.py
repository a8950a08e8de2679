"""multinode's tasks, one module each, in the order a cluster meets them.

Each task module depends on the shared lower modules (session, paths,
protocol, rendering, ssh files, ...), never on another task module: a task
that composes others (setup) runs them by name through the session.
"""

from invoke import Collection

from .. import sandbox
from ..config import DEFAULTS
from . import (bandwidth, bootstrap, churn, execute, headssh, hostkeys, jobs, launch, notify, setup, smoke, status,
               sync, teardown, tmux, users, verify)

ns = Collection()
for each in (hostkeys.hostkeys, users.detect_user, bootstrap.bootstrap, headssh.head_ssh, tmux.tmux, verify.verify,
             notify.notify, bandwidth.bandwidth, smoke.smoke, status.status, execute.exec_, sync.sync, launch.launch,
             jobs.jobs_, jobs.logs, jobs.stop, teardown.teardown, setup.setup, churn.replace, churn.add, churn.remove):
    ns.add_task(each)
ns.add_collection(sandbox.ns)
ns.configure({"multinode": DEFAULTS})
