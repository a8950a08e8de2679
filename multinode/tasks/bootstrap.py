"""bootstrap: render one node script per node, send it and the secrets, run it everywhere.

Secrets are read on the laptop and travel only by SFTP into a 0700 staging
directory on the node (files 0600), which the script removes when it ends:
never in a command line, the rendered script, a log or this output.
"""

import time

from invoke import Collection, task

from .. import ledger, manifest
from ..connections import NodeError
from ..inventory import BadInput
from ..localfiles import log_dir, private_log
from ..nodescript import node_script, parse_steps, send_and_run, step_times
from ..paths import SCRIPT, STAGE, venv_bin
from ..progress import Progress
from ..raycluster import check_ray
from ..render import command
from ..runreport import NodeRun, show_logs, show_table, write_summary
from ..session import Outcome, checks_arguments, session_of
from ..staging import cluster_key, secret_values, staged_files

def tail_lines(session, tail=None, **_):
    """``--tail``: lines of each node's log to show (default: multinode.tail)."""
    value = tail if tail is not None else session.options["tail"]
    if not str(value).isdigit():
        raise BadInput(f"bad --tail {tail!r}: expected a number of lines")
    return int(value)


# Steps run at once report in the order they end; the summary lists them in the manifest's.
ORDER = {name: i for i, name in enumerate(manifest.names())}


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
        steps = sorted(parse_steps(result.stdout), key=lambda step: ORDER.get(step[0], len(ORDER)))
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
