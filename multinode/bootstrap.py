"""bootstrap: render one node script per node, send it and the secrets, run it everywhere.

Secrets are read on the laptop and travel only by SFTP into a 0700 staging
directory on the node (files 0600), which the script removes when it ends:
never in a command line, the rendered script, a log or this output.
"""

import re
import secrets
import time

import paramiko

from invoke import Collection, task

from .schema import STEP_NAMES
from . import ledger
from .connections import NodeError, bounded_sftp
from .inventory import BadInput
from .localfiles import log_dir, private_log
from .raycluster import check_ray
from .progress import Progress
from .render import command, render, shell_args
from .runreport import NodeRun, show_logs, show_table, write_summary
from .session import Outcome, checks_arguments, session_of
from .staging import cluster_key, private_dir, secret_values, staged_files, without_credentials

# Each run stages in a directory of its own (an old run's cleanup never meets
# the new run's secrets); the script is written beside and renamed into place.
STAGE = ".cache/multinode/stage"
SCRIPT = ".cache/multinode/node.sh"
STEPS = list(STEP_NAMES)  # in the order they run
MULTI_NODE_ONLY = {"network", "nccl", "ray"}


def steps_for(nodes):
    """A single node has no Ray and no NCCL networking."""
    return [s for s in STEPS if len(nodes) > 1 or s not in MULTI_NODE_ONLY]


# STEP <name> <status> <detail> [<seconds>s]: the duration as the node measured it.
STEP_RE = re.compile(r"^STEP (\S+) (ok|changed|skipped|failed)\b ?(.*?) ?(?:\[(\d+(?:\.\d+)?)s\])?$")


def repo_name(repo):
    if repo.get("name"):
        return repo["name"]
    tail = repo["url"].rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    return tail[:-4] if tail.endswith(".git") else (tail or "workspace")


def venv_bin(opts, program):
    """Where ``program`` is in the workspace venv on a node."""
    return f"{opts['workspace']}/{repo_name(opts['repo'])}/venv/bin/{program}"


def node_script(node, nodes, opts, missing, peers=None):
    """The rendered script of ``node``: the same input gives the same bytes.

    ``peers``: the nodes taking part (default: all), whose private addresses
    the network step checks.
    """
    opts = without_credentials(opts)
    py = opts["python"]
    return render(
        "node.sh.j2",
        nid=node.nid, ihn=node.nid == 0, ray_head_ip=nodes[0].private, single_node=len(nodes) == 1,
        alias=node.alias, private_ip=node.private, nodes=nodes, peers=peers or nodes, steps=steps_for(nodes), missing_secrets=missing,
        repo_name=repo_name(opts["repo"]), step_timeouts=step_timeouts(opts),
        uv_index_args=shell_args(("--index-url", py["index_url"]), ("--find-links", py["find_links"]),
                                 ("--no-index", bool(py["no_index"]))),
        **{k: opts[k] for k in ("workspace", "repo", "python", "dotfiles", "git", "installers", "tools", "network",
                                "nccl", "ray", "docker")},
    )


def step_timeouts(opts):
    """Seconds each step may run: ``step_timeouts.NAME``, else ``step_timeout``."""
    return {step: opts["step_timeouts"].get(step, opts["step_timeout"]) for step in STEPS}


def parse_steps(output):
    """[(name, status, detail)] of the STEP lines in ``output``."""
    return [m.groups()[:3] for m in map(STEP_RE.match, output.splitlines()) if m]


def step_times(output):
    """{name: seconds} of the STEP lines in ``output`` that carry a duration."""
    return {m.group(1): float(m.group(4)) for m in map(STEP_RE.match, output.splitlines()) if m and m.group(4)}


def send_and_run(cxn, script, files, out, timeout, sftp_timeout=60):
    """Stage the secrets and the script by SFTP, run it, stream its output to ``out``.

    SFTP's open sends no mode, so files are created as the server's umask
    says: they are only ever written inside a 0700 directory, which nobody
    else can enter whatever their own mode. The stage is this run's own; the
    script goes to a temporary name first and is renamed over the old one
    (a bash still reading the old one after a Ctrl-C never sees it change).
    """
    run_id = secrets.token_hex(4)
    stage = f"{STAGE}/{run_id}"
    sftp = bounded_sftp(cxn, sftp_timeout)
    started = False
    try:
        private_dir(sftp, stage)
        for name, data in files.items():
            with sftp.open(f"{stage}/{name}", "wb") as fh:
                fh.chmod(0o600)
                fh.write(data)
        with sftp.open(f"{SCRIPT}.{run_id}", "wb") as fh:
            fh.write(script.encode())
        sftp.posix_rename(f"{SCRIPT}.{run_id}", SCRIPT)
        started = True  # from here the script's own EXIT trap removes the stage
        return cxn.run(command("bash", SCRIPT, stage), warn=True, hide=False, in_stream=False,
                       out_stream=out, err_stream=out, timeout=timeout)
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


def tail_lines(session, tail=None, **_):
    """``--tail``: lines of each node's log to show (default: multinode.tail)."""
    value = tail if tail is not None else session.options["tail"]
    if not str(value).isdigit():
        raise BadInput(f"bad --tail {tail!r}: expected a number of lines")
    return int(value)


@checks_arguments(tail_lines)
@task(help={
    "dry_run": "render every node's script and show what would be sent; connect to nothing",
    "tail": "lines of each node's log to show at the end (default: multinode.tail, 100)",
})
def bootstrap(c, dry_run=False, tail=None):
    """Set up every node at once: repo, venv, secrets, dotfiles, keys, docker, hosts, tools."""
    session = session_of(c)
    opts = session.options
    try:
        tail = tail_lines(session, tail)
    except BadInput as exc:
        raise exc.exit() from None
    nodes = session.nodes
    if dry_run:
        session.remember = False  # a dry run writes nothing: not the cluster, not its key
    key_path = cluster_key(session.settings.state, nodes, create=not dry_run)
    files, missing = staged_files(opts, key_path, nodes)
    if not dry_run:
        # Log in everywhere first: the head then checks only the workers taking part.
        session.each("bootstrap", lambda node, cxn: Outcome("ok"), quiet=True)
    peers = session.alive()
    scripts = {n.alias: node_script(n, nodes, opts, missing, peers) for n in nodes}
    if dry_run:
        for node in nodes:
            print(f"=== {node.alias} {node.address}: ~/{SCRIPT} ({len(scripts[node.alias])} bytes)")
            print(scripts[node.alias])
        print(f"=== staged on every node in ~/{STAGE}/<run> (0600, removed after the run): "
              + ", ".join(f"{name} ({len(data)} bytes)" for name, data in sorted(files.items())))
        if key_path is None:
            print("    and the cluster's own key pair (cluster_key, .pub, .authorized), made at the first run")
        if missing:
            print("not available on this laptop, skipped: " + ", ".join(missing))
        return
    logs = log_dir(opts["log_dir"])
    results = {}
    values = secret_values(opts, key_path)

    def run(node, cxn):
        start = time.monotonic()
        ledger.record(session.settings.state, node, values)  # before a byte of them leaves
        log_path = logs / f"setup_{node.alias}.log"
        with private_log(log_path) as log:
            result = send_and_run(cxn, scripts[node.alias], files, progress.stream(node, log), opts["script_timeout"])
        steps = parse_steps(result.stdout)
        results[node.alias] = NodeRun(steps, step_times(result.stdout), time.monotonic() - start, log_path,
                                      result.exited)
        failed = [name for name, status, _ in steps if status == "failed"]
        if result.exited != 0:
            raise NodeError(f"node script exited {result.exited}"
                            + (f"; failed step(s): {', '.join(failed)}" if failed else "") + f" (log: {log_path})")
        changed = [name for name, status, _ in steps if status == "changed"]
        return Outcome("changed" if changed else "ok", f"{len(steps)} steps, changed: {', '.join(changed) or 'none'}")

    with Progress(session.report, "bootstrap", opts["progress_interval"]) as progress:
        session.each("bootstrap", run, progress=progress)
    show_logs(session, results, tail)
    show_table(session, results)
    write_summary(session, results, logs / "bootstrap.json")
    if len(nodes) > 1 and opts["ray"]["enabled"]:
        def rejoin(nodes):
            """Restart the Ray of ``nodes`` (their ray step, forced): they join the head as it is now."""
            restart = command("env", "MULTINODE_RAY_RESTART=1", "bash", SCRIPT, f"{STAGE}/none", "--step", "ray")

            def again(node, cxn):
                out = cxn.run(restart, hide=True, in_stream=False, timeout=opts["check_timeout"]).stdout
                return Outcome("changed", next((d for _, _, d in parse_steps(out)), "restarted"))

            session.each("ray", again, only=nodes)

        check_ray(session, opts, venv_bin(opts, "python"), rejoin=rejoin)


ns = Collection("bootstrap")
ns.add_task(bootstrap, default=True)
