"""The node script: rendered for each node, sent with the secrets, run, its STEP lines read.

One rendered script per node (``templates/node.sh.j2``, every value quoted):
the same input gives the same bytes. Its secrets travel only by SFTP into a
0700 staging directory of this run's own, which the script removes when it
ends (or the laptop, where the upload itself fails).
"""

import secrets

import paramiko

from . import manifest, protocol
from .connections import bounded_sftp
from .paths import SCRIPT, STAGE, repo_name
from .render import command, render, shell_args
from .staging import private_dir, without_credentials


def node_script(node, nodes, opts, missing, peers=None):
    """The rendered script of ``node``: the same input gives the same bytes.

    ``peers``: the nodes taking part (default: all), whose private addresses
    the network step checks.
    """
    opts = without_credentials(opts)
    py = opts["python"]
    steps = manifest.applied(len(nodes))
    return render(
        "node.sh.j2",
        nid=node.nid, ihn=node is nodes[0], ray_head_ip=nodes[0].private, single_node=len(nodes) == 1,
        multi=len(nodes) > 1, alias=node.alias, private_ip=node.private, nodes=nodes, peers=peers or nodes,
        steps=[s.name for s in steps], needs={s.name: s.needs for s in steps},
        packages={s.name: s.packages for s in steps}, missing_secrets=missing,
        repo_name=repo_name(opts["repo"]), step_timeouts=manifest.timeouts(opts),
        uv_index_args=shell_args(("--index-url", py["index_url"]), ("--find-links", py["find_links"]),
                                 ("--no-index", bool(py["no_index"]))),
        **{k: opts[k] for k in ("workspace", "repo", "python", "dotfiles", "git", "installers", "tools", "network",
                                "nccl", "ray", "docker")},
    )


def parse_steps(output):
    """[(name, status, detail)] of the STEP lines in ``output``."""
    return [step[:3] for step in protocol.steps(output)]


def step_times(output):
    """{name: seconds} of the STEP lines in ``output`` that carry a duration."""
    return {name: seconds for name, _, _, seconds in protocol.steps(output) if seconds is not None}


def send_and_run(cxn, script, files, out, timeout, sftp_timeout=60, only=None, own=True):
    """Stage the secrets and the script by SFTP, run it, stream its output to ``out``.

    SFTP's open sends no mode, so files are created as the server's umask
    says: they are only ever written inside a 0700 directory, which nobody
    else can enter whatever their own mode. The stage is this run's own; the
    script goes to a temporary name first and is renamed over the old one
    (a bash still reading the old one after a Ctrl-C never sees it change).
    ``only``: those steps alone; ``own=False``: the script runs from the stage, the node's
    own script stays as it was.
    """
    run_id = secrets.token_hex(4)
    stage = f"{STAGE}/{run_id}"  # this run's own: an old run's cleanup never meets its secrets
    sftp = bounded_sftp(cxn, sftp_timeout)
    started = False
    try:
        private_dir(sftp, stage)
        for name, data in files.items():
            with sftp.open(f"{stage}/{name}", "wb") as fh:
                fh.chmod(0o600)
                fh.write(data)
        path = SCRIPT if own else f"{stage}/node.sh"
        with sftp.open(f"{path}.{run_id}", "wb") as fh:
            fh.write(script.encode())
        sftp.posix_rename(f"{path}.{run_id}", path)
        started = True  # from here the script's own EXIT trap removes the stage
        return cxn.run(command("bash", path, stage, *(("--only", ",".join(only)) if only else ())), warn=True,
                       hide=False, in_stream=False, out_stream=out, err_stream=out, timeout=timeout)
    finally:
        if not started:
            remove_stage(sftp, stage)


def remove_stage(sftp, stage):
    """Take a stage whose script never started off the node (best effort: the link may be gone)."""
    try:
        for name in sftp.listdir(stage):
            sftp.remove(f"{stage}/{name}")
        sftp.rmdir(stage)
    except (OSError, EOFError, paramiko.SSHException):
        pass
