"""Jobs: what the job tasks share on the laptop: names, a job's environment, its state read back.

A job (``fab launch``) runs on some nodes of the cluster, a rank per node,
each node keeping its own part in a directory of its own (`paths.JOBS`):
its state as ``KEY VALUE`` lines (templates/job_lib.sh.j2 says which), its
output, and on the head the watchdog's record. This module turns what the
nodes say of them (``jobs.sh list``) into `Job`s: each node's state
(running, exited 0, failed N, stopped, lost, unreachable), the first failure,
the job's own state, and the table, the JSON and the notification that say so.
"""

import re
import secrets
import time
from dataclasses import dataclass, field

from . import protocol
from .inventory import BadInput
from .render import quote
from .report import columns

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def check_name(name):
    """A job's name, as given: letters, digits, ``-``, ``_`` and ``.``, up to 64 (`BadInput` otherwise)."""
    if not NAME_RE.fullmatch(str(name)):
        raise BadInput(f"bad job name {name!r}: letters, digits, - _ . (up to 64, not starting with - _ or .)")
    return str(name)


def new_name(command):
    """A name for a job launched without one: its script's or program's name and four random hex digits."""
    words = str(command).split()
    script = next((w for w in words if w.endswith((".py", ".sh"))), words[0] if words else "job")
    stem = re.sub(r"[^A-Za-z0-9_.-]", "", script.rsplit("/", 1)[-1].rsplit(".", 1)[0])[:20].lstrip("-_.")
    return f"{stem or 'job'}-{secrets.token_hex(2)}"


def environment(name, nodes, rank, port, torchrun):
    """The job's variables for node ``nodes[rank]``: ``export NAME=value`` lines (the file ``env``).

    NODE_RANK and the rendezvous as launchers give them; ``torchrun``: the same as torchrun's own
    ``PET_*`` variables, read for its options, so that no rank is in any command line."""
    values = {"MASTER_ADDR": nodes[0].private, "MASTER_PORT": port, "NNODES": len(nodes), "NODE_RANK": rank,
              "MULTINODE_NODE_IPS": " ".join(n.private for n in nodes), "MULTINODE_JOB": name,
              "MULTINODE_NODE": nodes[rank].alias}
    if torchrun:
        values.update({"PET_NNODES": len(nodes), "PET_NODE_RANK": rank, "PET_MASTER_ADDR": nodes[0].private,
                       "PET_MASTER_PORT": port})
    return "".join(f"export {key}={quote(value)}\n" for key, value in values.items())


def torchrun_command(command):
    """``--torchrun``'s command: the script and its arguments under torch's launcher, from the venv."""
    return f"exec python -m torch.distributed.run {command}"


@dataclass
class Part:
    """One node's part of a job, as that node keeps it."""
    alias: str
    state: dict = field(default_factory=dict)  # the last value of each key
    supervised: bool = False
    watch: dict = field(default_factory=dict)  # on the head: the watchdog's record
    verdicts: dict = field(default_factory=dict)  # alias -> (time, kind, detail), the watchdog's
    watching: bool = False
    command: str = ""


def parse_list(alias, output):
    """``{name: Part}`` from one node's ``jobs.sh list``."""
    parts = {}
    for line in output.splitlines():
        tag, _, rest = line.partition(" ")
        name, _, rest = rest.partition(" ")
        if tag == "JOB":
            running, _, watching = rest.partition(" ")
            parts[name] = Part(alias, supervised=running == "running", watching=watching == "watching")
        elif name in parts and tag in ("JOB_STATE", "JOB_WATCH"):
            key, _, value = rest.partition(" ")
            (parts[name].state if tag == "JOB_STATE" else parts[name].watch)[key] = value
            if tag == "JOB_WATCH" and key == "verdict":
                who, at, kind, detail = (value.split(" ", 3) + ["", "", ""])[:4]
                parts[name].verdicts[who] = (float(at or 0), kind, detail)
        elif name in parts and tag == "JOB_COMMAND":
            parts[name].command = rest
    return parts


@dataclass
class Job:
    name: str
    id: str
    members: list  # aliases, in rank order
    parts: dict  # alias -> Part (the nodes that answered, the head's watch among them)
    unreachable: set  # aliases of members that did not answer

    @property
    def watch(self):
        """The head's watchdog record (the part holding one)."""
        return next((p for p in self.parts.values() if p.watch), Part(""))

    @property
    def command(self):
        return next((p.command for p in self.parts.values() if p.command), "")

    def times(self, key):
        return [float(p.state[key]) for p in self.parts.values() if p.state.get(key)]


def jobs(found, unreachable=()):
    """[Job] from ``{alias: {name: Part}}`` (the nodes that answered), newest first; ``unreachable``:
    the aliases that did not. A name on nodes under different ids is several jobs (an older one left
    on a node a later launch of that name did not use)."""
    grouped = {}
    for alias, parts in found.items():
        for name, part in parts.items():
            job_id = part.state.get("id") or part.watch.get("id", "")
            grouped.setdefault((name, job_id), {})[alias] = part
    made = []
    for (name, job_id), parts in grouped.items():
        members = next((p.state["members"].split() for p in parts.values() if p.state.get("members")),
                       next((p.watch["members"].split() for p in parts.values() if p.watch.get("members")), []))
        made.append(Job(name, job_id, members, parts, {a for a in members if a in set(unreachable)}))
    return sorted(made, key=lambda j: -(min(j.times("started"), default=0)))


def node_state(job, alias):
    """(state, time) of ``alias``'s part: running, exited 0, failed N, stopped, lost, unreachable (or
    unknown), with the time it ended or was found lost, where known. The node's own record wins; the
    head's watchdog's verdict stands in for a node that cannot say."""
    part, verdict = job.parts.get(alias), job.watch.verdicts.get(alias)
    if part is None or not part.state:
        if verdict:
            at, kind, detail = verdict
            return (f"{kind} {detail}" if kind in ("exited", "failed") else kind), at
        return ("unreachable" if alias in job.unreachable else "unknown"), None
    state = part.state
    if state.get("exit"):
        ended = float(state.get("ended") or 0) or None
        if state.get("stopped"):
            return "stopped", ended
        return ("exited 0" if state["exit"] == "0" else f"failed {state['exit']}"), ended
    if part.supervised:
        return "running", None
    return "lost", verdict[0] if verdict else None


def first_failure(job):
    """(alias, what) of the node that failed first (``exited 137``, ``lost``), or None: by the time
    each node ended (or the watchdog found it lost), the watchdog's own first among them."""
    found = []
    for alias in job.members:
        state, at = node_state(job, alias)
        if state.startswith("failed "):
            found.append((at or float("inf"), alias, f"exited {state[7:]}"))
        elif state == "lost":
            found.append((at or float("inf"), alias, "lost"))
    first = job.watch.watch.get("first", "").split()
    if len(first) >= 3 and first[2] in ("failed", "lost"):
        found.append((float(first[1]), first[0], "lost" if first[2] == "lost" else f"exited {first[3]}"))
    return min(found)[1:] if found else None


def overall(job):
    """The job's own state: running, finished, stopped, or failed: ALIAS exited N / lost."""
    states = [node_state(job, a)[0] for a in job.members]
    failure = first_failure(job)
    if "running" in states:
        return f"running ({failure[0]} {failure[1]})" if failure else "running"
    if failure:
        return f"failed: {failure[0]} {failure[1]}"
    if "unreachable" in states:
        return "unknown"
    return "stopped" if "stopped" in states else "finished"


def ended(job):
    """Whether the job has ended everywhere (as far as anyone can know)."""
    return all(node_state(job, a)[0] not in ("running", "unreachable") for a in job.members)


def elapsed(job, now=None):
    """Seconds from its first start to its last end (or now, while it runs)."""
    started = job.times("started")
    if not started:
        return 0.0
    stop = max(job.times("ended"), default=0) if ended(job) else (now or time.time())
    return max(0.0, stop - min(started))


def duration(seconds):
    """``3h12m``, ``5m03s``, ``12s``."""
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def message(job):
    """(ok, title, body) of the notification that ``job`` ended."""
    state, spent = overall(job), duration(elapsed(job))
    if state == "finished":
        return True, f"job {job.name} finished", f"job {job.name} finished on {len(job.members)} nodes in {spent}"
    if state == "stopped":
        return True, f"job {job.name} stopped", f"job {job.name} stopped after {spent}"
    return False, f"job {job.name} failed", f"job {job.name} {state}"


def shorten(text, width=32):
    return text if len(text) <= width else text[:width - 3] + "..."


def table(found_jobs, aliases, wide=6):
    """One table: a row per job; a column per node while there are at most ``wide``, else the nodes grouped by state."""
    per_node = len(aliases) <= wide
    head = ["name", "command", "started", "elapsed", *(aliases if per_node else ["nodes"]), "state"]
    rows = [head]
    for job in found_jobs:
        started = min(job.times("started"), default=0)
        cells = [job.name, shorten(job.command), time.strftime("%m-%d %H:%M", time.localtime(started)) if started
                 else "-", duration(elapsed(job))]
        states = {a: node_state(job, a)[0] for a in job.members}
        if per_node:
            cells += [states.get(a, "-") for a in aliases]
        else:
            grouped = {}
            for alias in job.members:
                grouped.setdefault(states[alias], []).append(alias)
            cells.append("; ".join(f"{s}: {', '.join(a)}" if len(grouped) > 1 else f"{s} ({len(a)})"
                                   for s, a in grouped.items()))
        rows.append(cells + [overall(job)])
    return "\n".join(columns(rows))


def as_json(job):
    """What ``jobs --json`` says of ``job``."""
    failure = first_failure(job)
    parts = {}
    for rank, alias in enumerate(job.members):
        state, at = node_state(job, alias)
        own = job.parts.get(alias, Part(alias)).state
        parts[alias] = {"rank": rank, "state": state, "exit": int(own["exit"]) if own.get("exit") else None,
                        "started": float(own["started"]) if own.get("started") else None, "ended": at,
                        "nproc_per_node": int(own["nproc"]) if own.get("nproc") else None, "stopped": own.get("stopped")}
    return {"name": job.name, "id": job.id, "command": job.command, "state": overall(job), "ended": ended(job),
            "elapsed": round(elapsed(job), 3), "first_failure": {"node": failure[0], "what": failure[1]} if failure
            else None, "watchdog": "running" if job.watch.watching else ("ended" if job.watch.watch else "none"),
            "nodes": parts}


def said(output, tag):
    """The fields of the first ``tag`` line of ``output`` (None when there is none)."""
    found = protocol.said(output, tag)
    return found[0] if found else None
