"""detect-user: find each node's login user; write rentalN aliases to ~/.ssh/config.

Our aliases live in one marked block of ``~/.ssh/config``; everything else in
the file stays byte for byte. A new block goes at the top, so its values win
over the user's wildcard entries, and ends with ``Host *`` so the user's own
top-level options still apply to every host, as before.
"""

from invoke import Collection, task

from ..config import split_users
from ..inventory import BadInput
from ..session import Outcome, checks_arguments, session_of
from ..sshfiles import write_ssh_config


def user_list(session, users=None, **_):
    """``--users``, checked (None: the configured ones)."""
    return split_users(users, "users (--users)") if users is not None else None


@checks_arguments(user_list)
@task(name="detect-user", help={"users": "login users to try, in order (default: multinode.users, ubuntu,user,root)"})
def detect_user(c, users=None):
    """Find each node's login user and write rental0.. aliases to ~/.ssh/config."""
    session = session_of(c)
    try:
        session.settings.users = user_list(session, users) or session.settings.users
    except BadInput as exc:
        raise exc.exit() from None
    before = {n.alias: n.user for n in session.nodes}

    def detect(node, cxn):
        was = before[node.alias]
        if was and was != node.user:
            return Outcome("changed", f"user {node.user} (was {was})")
        return Outcome("ok", f"user {node.user}")

    session.each("detect-user", detect)
    path = session.settings.ssh_config
    changed = write_ssh_config(path, session.nodes, session.settings.identity, session.jump, session.settings.known_hosts)
    aliases = f"{session.nodes[0].alias}..{session.nodes[-1].alias}" if len(session.nodes) > 1 else session.head.alias
    session.report.write(f"ssh config: {aliases} in {path} {'updated' if changed else 'unchanged'}")


ns = Collection("users")
ns.add_task(detect_user)
