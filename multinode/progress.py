"""Live progress of a task on the nodes: what each node does now, and for how long.

On a terminal: a table redrawn a few times a second (rich), a row per node
with the task, its current step (node scripts), that step's elapsed time and
the last line of output of that step (trimmed to the width; none yet: empty,
never the step before's); failed rows stand
out; bootstrap's table stays as the summary, a short task's goes once its
per-node lines are printed. Without a terminal (CI, a pipe, ``| tee``): the usual
per-node lines, plus one line per node for every ``progress_interval``
seconds a step has been running, naming the step, its elapsed time and that
step's last line. A node stuck on a step is visible within seconds either way.
"""

import sys
import threading
import time

STYLE = {"failed": "bold red", "ok": "green", "changed": "green", "running": ""}


def elapsed(seconds):
    """``42s``, ``3m05s``, ``1h02m``."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class NodeState:
    def __init__(self, node, task):
        self.alias, self.task = node.alias, task
        self.step, self.since, self.last, self.status = "-", time.monotonic(), "", "running"
        self.beat = self.since  # when its last heartbeat line was printed


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
            if text.startswith("--- "):  # a step begins: what the step before it said is no longer news
                state.step, state.since, state.beat = text[4:].strip(), time.monotonic(), time.monotonic()
                state.last = ""
            elif not text.startswith("STEP ") and text.strip():
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
                table.add_row(state.alias, state.task, state.step if running else state.status,
                              elapsed(now - state.since) if running else "", Text(state.last),
                              style=STYLE.get(state.status, ""))
        return table

    def heartbeat(self):
        """Without a terminal: a line per node whose step has run another interval."""
        now = time.monotonic()
        with self.lock:
            due = [s for s in self.nodes.values() if s.status == "running" and now - s.beat >= self.interval]
            for state in due:
                state.beat = now
        for state in due:
            last = f": {state.last[:120]}" if state.last else ""
            doing = "still at it" if state.step == "-" else f"still in step {state.step}"
            self.report.write(f"{state.task:<12} {state.alias}  {doing} after {elapsed(now - state.since)}{last}")

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
