"""Live progress of a task on the nodes: what each node does now, and for how long.

On a terminal: a table redrawn a few times a second (rich), a row per node
with the task, the steps it runs now (a node script runs independent steps at
once: ``python+docker``), how long the oldest has run, and the last line of
output of a running step (trimmed to the width; none yet: empty, never a
finished step's); failed rows stand out; bootstrap's table stays as the
summary, a short task's goes once its per-node lines are printed. Without a
terminal (CI, a pipe, ``| tee``): the usual per-node lines, plus one line for
every ``progress_interval`` seconds a step has been running, naming the node,
the step, its elapsed time and that step's last line. A node stuck on a step
is visible within seconds either way.
"""

import itertools
import sys
import threading
import time

from . import protocol

SPOKEN = itertools.count(1)  # the order lines arrive in: the latest shown
STYLE = {"failed": "bold red", "ok": "green", "changed": "green", "running": ""}


def elapsed(seconds):
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Running:
    """A step a node runs now: since when, its last heartbeat, its last line of output."""

    def __init__(self):
        self.since = self.beat = time.monotonic()
        self.last, self.said = "", 0  # its last line, and when it said it (SPOKEN)


class NodeState:
    def __init__(self, node, task):
        self.alias, self.task = node.alias, task
        self.since, self.last, self.status = time.monotonic(), "", "running"
        self.beat = self.since  # when its last heartbeat line was printed (no step running)
        self.steps = {}  # {step: Running}: a node script runs several at once

    def step(self):
        """The running steps, oldest first: `python+docker`, or `-`."""
        return "+".join(self.steps) or "-"

    def started(self):
        """When the oldest running step started (the node's start, with none)."""
        return min((r.since for r in self.steps.values()), default=self.since)

    def latest(self):
        """The last line the running steps printed (only theirs: never a finished step's)."""
        spoke = [r for r in self.steps.values() if r.last]
        return max(spoke, key=lambda r: r.said).last if spoke else ("" if self.steps else self.last)


class Lines:
    """A stream for Invoke's ``out_stream``: into ``log``, and line by line into `Progress`."""

    def __init__(self, progress, node, log):
        self.progress, self.node, self.log, self.partial = progress, node, log, ""

    def write(self, data):
        self.log.write(data)
        self.log.flush()
        self.partial += data
        *lines, self.partial = self.partial.split("\n")
        for line in lines:
            self.progress.line(self.node, line)

    def flush(self):
        self.log.flush()


class Progress:
    """The live view of one task over the nodes (a context manager)."""

    def __init__(self, report, task, interval=30, tty=None, transient=False):
        self.report, self.task, self.interval, self.transient = report, task, interval, transient
        self.tty = (sys.stdout.isatty() and not report.quiet) if tty is None else tty
        self.nodes = {}
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.live = None
        self.thread = None

    # -- what the nodes say ---------------------------------------------------
    def start(self, node):
        with self.lock:
            self.nodes[node.alias] = NodeState(node, self.task)

    def stream(self, node, log):
        return Lines(self, node, log)

    def line(self, node, text):
        text = text.rstrip("\r")
        with self.lock:
            state = self.nodes[node.alias]
            begun, output = protocol.begun(text), protocol.step_output(text)
            if begun:  # a step begins: its own lines only are news from it
                state.steps[begun] = Running()
            elif text.startswith("STEP "):
                state.steps.pop(text.split(" ", 2)[1], None)
            elif output and output[0] in state.steps:
                if output[1].strip():
                    running = state.steps[output[0]]
                    running.last, running.said = output[1].strip(), next(SPOKEN)
            elif text.strip() and not output:
                state.last = text.strip()

    def finish(self, node, status):
        with self.lock:
            state = self.nodes.get(node.alias)
            if state is not None:
                state.status = status

    # -- showing it -----------------------------------------------------------
    def table(self):
        from rich.table import Table  # rich is imported only where a terminal shows the table (60 ms)
        from rich.text import Text

        table = Table(box=None, pad_edge=False, expand=False)
        for name in ("node", "task", "step", "for", "last output"):
            table.add_column(name, no_wrap=True, overflow="ellipsis", max_width=None if name != "last output" else 80)
        now = time.monotonic()
        with self.lock:
            for state in self.nodes.values():
                running = state.status == "running"
                table.add_row(state.alias, state.task, state.step() if running else state.status,
                              elapsed(now - state.started()) if running else "", Text(state.latest()),
                              style=STYLE.get(state.status, ""))
        return table

    def heartbeat(self):
        """Without a terminal: a line per running step (or node) that has run another interval."""
        now = time.monotonic()
        due = []
        with self.lock:
            for state in (s for s in self.nodes.values() if s.status == "running"):
                for name, step in state.steps.items() or [(None, state)]:
                    if now - step.beat >= self.interval:
                        step.beat = now
                        due.append((state, name, step))
        for state, name, step in due:
            last = f": {step.last[:120]}" if step.last else ""
            doing = f"still in step {name}" if name else "still at it"
            self.report.write(f"{state.task:<12} {state.alias}  {doing} after {elapsed(now - step.since)}{last}")

    def _run(self):
        while not self.stop.wait(0.25 if self.tty else 1.0):
            if self.tty:
                self.live.update(self.table())
            else:
                self.heartbeat()

    def __enter__(self):
        if self.tty:
            from rich.console import Console
            from rich.live import Live

            self.live = Live(self.table(), console=Console(file=sys.stdout), refresh_per_second=4,
                             transient=self.transient, redirect_stdout=True, redirect_stderr=False)
            self.live.start()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(2)
        if self.live is not None:
            self.live.update(self.table())
            self.live.stop()  # the table stays; the cursor is given back even after Ctrl-C
        return False
