"""Where multinode keeps things on a node: one place for each path the tasks share.

The workspace repository and its venv, the node script and its staging
directory, teardown's search directory, the head's worker aliases and their
host keys, the tmux session, the jobs' directories. Paths under the login home are relative to it
(SFTP and ssh commands start there).
"""

# The node script, renamed into place; each run stages its secrets in STAGE/<run>.
SCRIPT = ".cache/multinode/node.sh"
STAGE = ".cache/multinode/stage"
# What teardown searches for, sent by SFTP into this directory only the login user can enter.
TEARDOWN_PLACE = ".cache/multinode/teardown"
# On the head: the worker aliases (read with `ssh -F`) and their verified host keys, in ~/.ssh.
HEAD_SSH_CONFIG = "multinode_config"
HEAD_KNOWN_HOSTS = "multinode_known_hosts"
# The tmux session on the head, a pane per node.
TMUX_SESSION = "multinode"
# Jobs (fab launch): a 0700 directory per job, JOBS/NAME, on every node it runs on and on the head
# (its watchdog): the job's script, environment, command, state and output, kept after it ends.
JOBS = ".cache/multinode/jobs"


def repo_name(repo):
    """The workspace repository's directory name: ``repo.name``, else the URL's last part."""
    if repo.get("name"):
        return repo["name"]
    tail = repo["url"].rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail[:-4] if tail.endswith(".git") else (tail or "workspace")


def repo_dir(opts):
    """The workspace repository on a node."""
    return f"{opts['workspace']}/{repo_name(opts['repo'])}"


def venv_dir(opts):
    """The workspace venv on a node."""
    return f"{repo_dir(opts)}/venv"


def venv_bin(opts, program):
    """Where ``program`` is in the workspace venv on a node."""
    return f"{venv_dir(opts)}/bin/{program}"


def job_dir(name):
    """A job's directory on a node (under the login home)."""
    return f"{JOBS}/{name}"


def worker_name(node):
    """The head's alias of ``node`` over the private network."""
    return f"worker{node.nid}"

