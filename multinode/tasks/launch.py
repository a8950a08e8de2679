"""launch: start a command on every node at once (or those named), detached, as one distributed job.

Three steps over the run's one connection per node:

1. Check, on every node the job needs and the head: that no job of that name
   runs there, a port for ``MASTER_PORT`` on the rank-0 node (``jobs.port``,
   or a free one), the head's ssh aliases of the job's workers (its watchdog
   follows them). A node that is unreachable or says no refuses the launch,
   exit 2, before anything starts: a partial job would hang at its first
   collective.
2. Start: to each node, by SFTP into a new 0700 directory, its environment
   (``env``, 0600: the rank and the rendezvous, never in a command line),
   its state, the command and the job's script (templates/job.sh.j2); then
   one command makes that the job's directory and starts its supervisor,
   detached (``setsid``): the command runs in a session and process group of
   its own, as the login user, in the workspace repo, with ~/.env's secrets,
   the node's NCCL/Gloo settings and the venv. It returns once the command
   runs. A node where it cannot start stops it on the others.
3. The watchdog, on the head (templates/job_watch.sh.j2), detached too.

Why a watchdog on the head, not the laptop: the laptop sleeps, roams and is
gone for hours; a rank that dies while it is away leaves the others hanging
at their next collective, on GPUs paid by the hour. The head is up as long
as the job matters, and it has what watching needs: ssh aliases of every
worker over the private network (``fab head-ssh``: the cluster key, strict
host keys, a config file of ours alone). So the watchdog follows each node's
part over one long-lived ssh connection per worker (the head's own part, in
a local process), each running that node's ``job.sh follow``, which reads
the node's own state every half second and says how the part ended, or that
its supervisor vanished without saying (killed, the machine restarted).
Keepalives every second notice a dead link; a dropped connection is made
again; a node with no answer for about ``jobs.lost_after`` seconds is lost.
On the first node that fails or is lost (unless ``--keep-going``) every
other follower is sent ``stop REASON`` on its stdin: the line travels over
the connection already open (no new login, which a node whose sshd died
could not take) and the node stops its own part: marked as stopped first
(so a rank that errors out because its peer went a moment earlier counts as
stopped, not as a new failure), TERM to the process group, KILL after
``jobs.grace`` seconds. Everything it saw goes into the head's ``watch``
file, which ``jobs`` reads from any laptop. The watchdog notifies no one:
apprise URLs may hold tokens and stay on the laptop, which notifies when it
sees the end (see multinode.jobops). Its limit: a lost head takes it along;
the workers then stop at their own collective timeout.

``--follow`` then streams the output of every node until the job ends, says
how it ended and notifies (see multinode.jobops).
"""

import secrets

from invoke import Collection, task
from invoke.exceptions import Exit

from .. import protocol
from ..connections import NodeError, bounded_sftp
from ..inventory import BadInput
from ..jobops import follow as follow_job, mark_and_stop, notified, query, settled
from ..jobs import Job, Part, check_name, environment, new_name, said, torchrun_command
from ..paths import HEAD_SSH_CONFIG, JOBS, job_dir, repo_dir, venv_dir, worker_name
from ..render import command as shell, render
from ..session import Outcome, checks_arguments, named_nodes, session_of
from ..staging import private_dir


def members_of(session, nodes=None):
    """The job's nodes in rank order: the cluster's (the head, when it takes part, is rank 0)."""
    chosen = named_nodes(session, nodes, "nodes") if nodes else session.nodes
    return [n for n in session.nodes if n in chosen]


def launch_arguments(session, command=None, name=None, nodes=None, **_):
    if not command or not str(command).strip():
        raise BadInput("launch needs a command: fab launch 'python train.py'")
    if name is not None:
        check_name(name)
    members_of(session, nodes)


def put(cxn, where, files, seconds):
    """``files`` ({name: text}) into ``where``, a new directory only the login user can enter (made
    0700 before anything is written into it: SFTP's open sends no mode), ``env`` 0600 too."""
    sftp = bounded_sftp(cxn, seconds)  # the connection's own, kept open with it
    try:
        sftp.mkdir(where, 0o700)
    except FileNotFoundError:  # the first job on this node: its parents too
        private_dir(sftp, where)
    sftp.chmod(where, 0o700)  # whatever the server's umask made of it
    for name, text in files.items():
        with sftp.open(f"{where}/{name}", "wb") as fh:
            if name == "env":
                fh.chmod(0o600)
            fh.write(text.encode())


def preflight(session, name, members):
    """Step 1: the port MASTER_PORT gets; anything that refuses the launch is exit 2."""
    head, port = session.head, session.options["jobs"]["port"]
    involved = members + ([] if head in members else [head])

    def check(node, cxn):
        words = ["check", name, port if node is members[0] else "-"]
        if node is head:
            words += [f"{worker_name(w)}:{w.private}" for w in members if w is not head]
        return Outcome("ok", value=cxn.run(query(session, *words), hide=True, in_stream=False,
                                           timeout=session.options["check_timeout"]).stdout)

    found = session.each("launch", check, quiet=True, only=involved)
    problems = [f"{n.alias}: {session.failed[n.alias][1]}" for n in involved if n.alias in session.failed]
    for node in involved:
        out = found[node.alias].value if node.alias in found else ""
        if said(out, "JOB_RUNNING"):
            problems.append(f"{node.alias}: a job {name!r} is running there (`fab stop {name}`, or another --name)")
        if said(out, "JOB_PORT_BUSY"):
            problems.append(f"{node.alias}: port {said(out, 'JOB_PORT_BUSY')} (multinode.jobs.port) is in use there")
        for worker in protocol.said(out, "JOB_NO_ALIAS"):
            problems.append(f"{node.alias}: no ssh alias {worker} for the job's watchdog: run `fab head-ssh` first")
    if problems:
        raise Exit("launch refused, nothing was started:\n  " + "\n  ".join(problems), code=2)
    return int(said(found[members[0].alias].value, "JOB_PORT"))


def start(session, name, job_id, members, port, cmd, torchrun):
    """Step 2: the job on every member at once; {alias: Outcome} of those where it runs."""
    opts = session.options
    script = render("job.sh.j2", job=name, dir=job_dir(name), grace=opts["jobs"]["grace"],
                    workspace=opts["workspace"], repo=repo_dir(opts), venv=venv_dir(opts), torchrun=torchrun)
    new = f"{JOBS}/.new-{name}-{job_id}"

    def begin(node, cxn):
        rank = members.index(node)
        state = "".join(f"{k} {v}\n" for k, v in (("id", job_id), ("name", name), ("alias", node.alias),
                                                   ("rank", rank), ("members", " ".join(m.alias for m in members)),
                                                   ("port", port)))
        put(cxn, new, {"env": environment(name, members, rank, port, torchrun), "state": state, "command": cmd,
                       "job.sh": script}, opts["check_timeout"])
        out = cxn.run(shell("bash", f"{new}/job.sh", "start", new), hide=True, warn=True, in_stream=False,
                      timeout=opts["check_timeout"])
        started = said(out.stdout, "JOB_STARTED")
        if not started:
            raise NodeError(said(out.stdout, "JOB_REFUSED") or (out.stderr.strip().splitlines() or
                                                                 [f"its start exited {out.exited}"])[-1])
        pid, nproc = started.split()
        return Outcome("changed", f"rank {rank} of {len(members)}: running, pid {pid}, NPROC_PER_NODE={nproc}")

    return session.each("launch", begin, only=members)


def watchdog(session, name, job_id, members, keep_going):
    """Step 3: the job's watchdog on the head."""
    head, opts = session.head, session.options
    script = render("job_watch.sh.j2", job=name, dir=job_dir(name), keep_going=keep_going,
                    lost_after=opts["jobs"]["lost_after"], ssh_config=HEAD_SSH_CONFIG,
                    members=[{"alias": m.alias, "target": "local" if m is head else worker_name(m)} for m in members])
    new = f"{JOBS}/.watch-{name}-{job_id}"

    def begin(node, cxn):
        put(cxn, new, {"watch.sh": script, "watch": f"id {job_id}\nname {name}\n"}, opts["check_timeout"])
        out = cxn.run(shell("bash", f"{new}/watch.sh", "start", new), hide=True, warn=True, in_stream=False,
                      timeout=opts["check_timeout"])
        if not said(out.stdout, "JOB_WATCHING"):
            raise NodeError(said(out.stdout, "JOB_REFUSED") or f"the watchdog did not start (exit {out.exited})")
        return Outcome("ok", f"follows {len(members)} node(s) over its worker aliases"
                             + ("; --keep-going: a failure stops no one" if keep_going else
                                "; the first failure stops the others"))

    session.each("watchdog", begin, only=[head])


@checks_arguments(launch_arguments)
@task(help={"command": "what every node runs (with --torchrun: the script and its arguments)",
            "name": "the job's name: letters, digits, - _ . (default: the script's name and 4 random hex digits)",
            "nodes": "only these nodes, by alias or address: rental0,rental2 (default: all); ranks in cluster order",
            "torchrun": "run the command under torchrun (python -m torch.distributed.run), its options from the "
                        "job's environment (PET_*)",
            "keep_going": "a node that fails or is lost does not stop the others",
            "follow": "stream every node's output until the job ends, then say how it ended and notify"})
def launch(c, command, name=None, nodes=None, torchrun=False, keep_going=False, follow=False):
    """Start a command on every node at once as one distributed job, detached; print its name."""
    session = session_of(c)
    members, name = members_of(session, nodes), name or new_name(command)
    notified(session)  # this laptop notifies of the jobs that end from now on
    port = preflight(session, name, members)
    job_id = secrets.token_hex(4)
    cmd = torchrun_command(command) if torchrun else command
    running = start(session, name, job_id, members, port, cmd, torchrun)
    if len(running) < len(members):
        if running:
            parts = {alias: Part(alias) for alias in running}
            mark_and_stop(session, Job(name, job_id, [m.alias for m in members], parts, set()),
                          "it could not start on every node", task="launch-stop")
        return
    watchdog(session, name, job_id, members, keep_going)
    hints = [(f"fab logs {name} --follow", "its output, as it comes"), ("fab jobs", "every job's state"),
             (f"fab stop {name}", "stop it on every node")]
    session.report.write(f"\njob {name} started on {len(members)} node(s): MASTER_ADDR={members[0].private} "
                         f"MASTER_PORT={port}\n" + "\n".join(f"  {hint:<{len(hints[0][0])}}  {what}" for hint, what in hints))
    if follow:
        aliases = [m.alias for m in members] + [session.head.alias]
        job = Job(name, job_id, [m.alias for m in members], {a: Part(a) for a in aliases}, set())
        settled(session, job, "launch", follow_job(session, job, "+1", task="launch"))


ns = Collection("launch")
ns.add_task(launch)
