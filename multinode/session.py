"""One invocation's cluster: its nodes, one connection per node, failures.

`ClusterExecutor` makes one `Session` per ``fab`` run and hands it to every
task. A task calls `Session.each` to run a function on all live nodes at once
(a bounded pool); a node that raises is reported, remembered as failed and
skipped by the tasks chained after it. The connection a node opens first is
reused by every later task of the same run.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass

import paramiko
from invoke.exceptions import Exit

from .config import options, settings
from .connections import AuthFailed, NodeError, WaitingRemote, describe, isolated, login, tcp_connect
from .inventory import BadInput, adopt_known_users, load_cluster, parse_hosts, parse_jump, save_state
from .arguments import checks_arguments, named_nodes, number_arg  # noqa: F401  the tasks import them from here
from .pins import Pins, as_key
from .reach import hop_of, resolve_names, show, through
from .progress import Progress
from .report import Reporter


@dataclass
class Outcome:
    status: str  # "ok" or "changed"
    detail: str = ""
    value: object = None


def session_of(c, nodes=True):
    """The running `Session` of a task's context; ``nodes``: the task needs a cluster (exit 2 without one)."""
    session = c.__dict__.get("session")
    if session is None:
        raise Exit(
            "multinode: these tasks need the multinode executor: run them with `multinode`, "
            "or with `fab` in the multinode project (its fabric.yaml sets tasks.executor_class)",
            code=2,
        )
    session.start(c.config)
    if nodes:
        session.need_nodes()
    return session


class Session:
    def __init__(self, hosts=None):
        # -H is parsed (and refused, exit 2) before any task runs.
        self.given = parse_hosts(hosts) if hosts else None
        self.nodes = None
        self.failed = {}  # alias -> (task, reason)
        self.skipped = set()  # (task, alias) whose "skipped" line was printed
        self.conns = {}
        self.locks = {}
        self.config = None
        self.remembered = []
        self.checks = None  # verify's results, once it ran: {alias: {check: (status, reason)}}
        self.check_seconds = {}  # verify's round trip per node
        self.connect_seconds = {}  # each node's login (TCP, key exchange, authentication), once per run
        self.facts = {}  # verify's facts per node (GPU, driver, CUDA, Python, torch, packages)
        self.interfaces = {}  # verify's word for each node's NCCL/Gloo interface
        self.pairs = []  # verify's unreachable pairs of nodes
        self.interrupted = False
        self.remember = True  # False: this run writes nothing on the laptop (a dry run)
        self.touched = set()  # aliases of the nodes this run's tasks worked on (the summary counts these)
        self.collection = None  # the run's tasks (set by the executor), which run_task finds by name
        self.jump_given = None  # --jump of a task of this run (set by the executor), "none": no jump host
        self.jump = None  # the jump host in front of every node, as a Node of its own
        self.unresolved = None  # a name that did not resolve: the run stops before a task needs the nodes
        self.unreachable = {}  # alias -> why its login failed (a hop's failure is told to every node behind it)
        self.scope = None  # the aliases this run works on (setup --nodes, churn); None: every node
        self.failed_before = set()  # nids of the nodes that failed in the last run (remembered)
        self.leaving = []  # machines leaving the cluster, not yet wiped (remembered; see `membership`)
        self.admitted = []  # machines this run reaches that are not (or not yet) members (`admit`)

    def start(self, config):
        """Load settings and nodes once, on the first task that needs them."""
        if self.nodes is not None:
            return
        try:
            self.settings = settings(config)
            self.options = options(config)  # the node tasks' config, checked before any connection
            if not self.settings.identity.is_file():
                raise BadInput(f"identity file {str(self.settings.identity)!r} not found (set multinode.identity or -i)")
            remembered, remembered_jump, failed, leaving = load_cluster(self.settings.state, notes=True)
            # A task that needs nodes stops here without them (session_of); one that does not
            # (hostkeys --forget) goes on.
            self.no_cluster = BadInput("no cluster given and none remembered: pass -H PUBLIC:PRIVATE[,PUBLIC:PRIVATE...]")
            nodes = adopt_known_users(self.given, remembered) if self.given else remembered or []
            self.remembered = remembered or []
            if remembered and (not self.given or [n.address for n in self.given] == [n.address for n in remembered]):
                self.failed_before, self.leaving = set(failed), leaving  # notes of this cluster, not another's
            self.pins = Pins.load(self.settings.state, self.settings.known_hosts)
            self.jump = self.jump_host(remembered_jump, remembered)
        except BadInput as exc:
            raise exc.exit() from None
        for node in nodes + self.leaving:
            node.alias = f"{self.settings.alias_prefix}{node.nid}"
            node.via = nodes[0].address if node.head_only else ""
        try:
            show(resolve_names(nodes, self.jump))
        except BadInput as exc:
            self.unresolved = exc
        # Set here, once, before any thread: Invoke's config is not safe to change concurrently.
        config.runners.remote = WaitingRemote
        self.config = isolated(config)
        self.locks = {n.alias: threading.Lock() for n in nodes + ([self.jump] if self.jump else [])}
        self.report = Reporter(nodes + ([self.jump] if self.jump else []))  # widths: the jump host's lines too
        self.nodes = nodes

    def jump_host(self, remembered, nodes):
        """The jump host of this run: ``--jump`` (``none``: no jump host), else ``multinode.jump``,
        else, for the remembered cluster (``-H`` naming the same machines too), the one it was set up with."""
        prefix = self.settings.alias_prefix
        for spec in (self.jump_given, self.settings.jump):
            if spec:
                return None if spec == "none" else parse_jump(spec, prefix)
        same = not self.given or [n.address for n in self.given] == [n.address for n in nodes or []]
        if remembered is not None and same:
            remembered.alias = f"{prefix}-jump"
            return remembered
        return None

    def need_nodes(self):
        """Stop the run (exit 2) where a task needs the nodes and there are none, or a name did not resolve."""
        if not self.nodes:
            raise self.no_cluster.exit()
        if self.unresolved is not None:
            raise self.unresolved.exit()

    def run_task(self, c, name, **arguments):
        """Run the task ``name`` of this run's collection: a task that composes others (setup)
        names them, never imports them."""
        return self.collection[name](c, **arguments)

    def check_task(self, name, **arguments):
        """Check ``arguments`` as the task ``name`` checks its own (`BadInput` when one is bad)."""
        check = getattr(self.collection[name], "check_arguments", None)
        return check(self, **arguments) if check else None

    @property
    def head(self):
        return self.nodes[0]

    def admit(self, machines):
        """Let this run reach ``machines`` that are not members (new ones, ones leaving): each gets a
        lock and a place in the report. A leaving machine whose alias a member now has is
        called ALIAS-old."""
        members = {n.alias for n in self.nodes}
        self.admitted += [n for n in machines if n not in self.admitted]
        for node in machines:
            if node.alias in members and node not in self.nodes:
                node.alias = f"{node.alias}-old"
            self.locks.setdefault(node.alias, threading.Lock())
            self.report.alias_w = max(self.report.alias_w, len(node.alias))
            self.report.addr_w = max(self.report.addr_w, len(node.address))
        return list(machines)

    @property
    def scoped(self):
        """The nodes this run works on: all of them, unless a task chose some (``scope``)."""
        return [n for n in self.nodes if self.scope is None or n.alias in self.scope]

    def find(self, name):
        """The node called ``name`` (alias, public address or ``[addr]:port``), or None."""
        return next((n for n in self.nodes if name in (n.alias, n.public, n.address)), None)

    def alive(self):
        return [n for n in self.nodes if n.alias not in self.failed]

    def fail(self, node, task, reason):
        self.failed.setdefault(node.alias, (task, reason))
        self.report.line(task, node, "failed", reason)

    def skip_failed(self, task, nodes):
        """Say, once per task, that each of ``nodes`` that failed earlier is skipped."""
        for node in nodes:
            failed_in = self.failed.get(node.alias, (task,))[0]
            if failed_in != task and (task, node.alias) not in self.skipped:
                self.skipped.add((task, node.alias))
                self.report.line(task, node, "skipped", f"failed earlier in {failed_in}")

    def each(self, task, fn, connect=True, quiet=False, only=None, progress=None):
        """Run ``fn(node, cxn)`` (``fn(node)`` unless ``connect``) on every live node (of ``only``).

        Returns ``{alias: Outcome}`` for the nodes that succeeded. Failures are
        reported at once; successes too, unless ``quiet`` (the task reports).
        While it runs, a live view shows which nodes are still at it (see
        `Progress`; ``progress``: the task's own, already shown).
        """
        only = self.scoped if only is None else only  # [] is no node
        self.skip_failed(task, only)
        view = progress or Progress(self.report, task, self.options["progress_interval"], transient=True)

        def work(node):
            view.start(node)
            try:
                outcome = fn(node, self.connection(node)) if connect else fn(node)
            except Exception as exc:  # one node's failure never stops the others
                view.finish(node, "failed")
                if not self.interrupted:  # else: its connection was closed on purpose
                    self.fail(node, task, describe(exc))
                return node.alias, None
            view.finish(node, outcome.status)
            if not quiet:
                self.report.line(task, node, outcome.status, outcome.detail)
            return node.alias, outcome

        targets = [n for n in only if n.alias not in self.failed]
        self.touched.update(n.alias for n in targets)
        if not targets:
            return {}
        pool = ThreadPoolExecutor(max_workers=min(self.settings.workers, len(targets)))
        try:
            with view if progress is None else nullcontext():
                results = dict(pool.map(work, targets))
        except KeyboardInterrupt:
            self.interrupt(task, len(targets))
        finally:
            pool.shutdown(wait=not self.interrupted, cancel_futures=True)
        return {alias: out for alias, out in results.items() if out is not None}

    def interrupt(self, task, count):
        """Ctrl-C: close every connection (ending the commands on them) and stop, exit 130.

        Waiting for the pool would wait for every node script (up to
        script_timeout) while the user wants out.
        """
        self.interrupted = True
        self.close()
        raise Exit(
            f"multinode: interrupted during {task}: connections to {count} node(s) closed. A node script "
            "still running stops at its next line of output; running the task again is safe.",
            code=130,
        )

    def candidates(self, node):
        """Login users to try: the explicit one, else the remembered one first."""
        if node.explicit_user:
            return [node.user]
        first = [node.user] if node.user else []
        return first + [u for u in self.settings.users if u not in first]

    def connection(self, node):
        """The node's open connection, logging in (and finding the user) once."""
        with self.locks[node.alias]:
            if self.interrupted:
                raise NodeError("interrupted")
            cxn = self.conns.get(node.alias)
            if cxn is not None:
                return cxn
            if node.alias in self.unreachable:  # tried in this run already (a hop, for a node behind it)
                raise NodeError(self.unreachable[node.alias])
            tried, started = [], time.monotonic()
            for user in self.candidates(node):
                pinned = self.pins.get(node)
                try:
                    cxn = login(node, user, self.settings, self.config, as_key(pinned) if pinned else None,
                                self.socket_to(node))
                except AuthFailed:
                    tried.append(user)
                    continue
                except NodeError as exc:
                    self.unreachable[node.alias] = str(exc)
                    raise
                node.user = user
                self.conns[node.alias] = cxn
                self.connect_seconds[node.alias] = round(time.monotonic() - started, 3)
                if self.interrupted:  # Ctrl-C came during this login: close() may have missed it
                    cxn.close()
                    raise NodeError("interrupted")
                return cxn
            self.unreachable[node.alias] = f"no login user worked (tried {', '.join(tried)} with key {self.settings.identity})"
            raise NodeError(self.unreachable[node.alias])

    def socket_to(self, node):
        """A fresh socket to ``node``'s sshd: TCP, or a channel through its hop (see `reach`)."""
        hop = hop_of(node, self.head, self.jump)
        if hop is None:
            return tcp_connect(node, self.settings.connect_timeout)
        return through(node, hop, self.connection, self.settings.connect_timeout)

    def disconnect(self, node):
        """Close ``node``'s connection now (a command running over it ends); a later task logs in anew."""
        cxn = self.conns.pop(node.alias, None)
        if cxn is not None:
            cxn.close()

    def close(self):
        # The nodes behind a hop first, then the head, the jump host last (each carries the ones before).
        hops = [n.alias for n in ([self.head] if self.nodes else []) + ([self.jump] if self.jump else [])]
        for alias in sorted(self.conns, key=lambda a: hops.index(a) + 1 if a in hops else 0):
            cxn = self.conns.pop(alias, None)
            try:
                if cxn is not None:
                    cxn.close()
            except (EOFError, OSError, paramiko.SSHException):  # its hop went first (Ctrl-C): closed all the same
                pass

    def abort(self):
        """A task stopped the run: close; after Ctrl-C, still remember the cluster.

        Any other stop (a bad task argument, exit 2) writes nothing.
        """
        self.close()
        if self.interrupted and self.nodes and self.remember:
            self.save()

    def save(self):
        """Remember the cluster: its nodes, jump host, the nodes that failed (in this run, or
        in an earlier one and not worked on since) and the machines still leaving it."""
        failed = {n.nid for n in self.nodes if n.alias in self.failed
                  or (n.nid in self.failed_before and n.alias not in self.touched)}
        save_state(self.settings.state, self.nodes, self.jump, failed, self.leaving)

    def finish(self):
        """Close connections, remember the cluster, summarize; exit 1 on failure."""
        self.close()
        if not self.nodes:
            return
        if self.remember:
            self.save()
        # The nodes the run worked on (`exec --nodes` picks some), else all of them.
        worked = [n for n in self.nodes if n.alias in self.touched or n.alias in self.failed]
        worked += [n for n in self.admitted if n.alias in self.failed and n not in self.nodes]
        self.report.summary(worked or self.nodes, self.failed, hops=[self.jump] if self.jump else [])
        if self.failed:
            raise Exit(code=1)
