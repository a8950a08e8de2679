"""What the user reads: one line per node per task as it finishes, a summary.

Columns are sized from the inventory so 1 node and 32 nodes both read well.
"""

import sys
import threading

MARK = {"ok": "ok", "changed": "changed", "failed": "FAILED", "skipped": "skipped"}


class Reporter:
    def __init__(self, nodes, stream=None):
        self._stream = stream  # None: whatever sys.stdout is at the time (a live view redirects it)
        self.quiet = False  # --json: only the JSON on stdout, failures on stderr
        self.lock = threading.Lock()
        self.alias_w = max((len(n.alias) for n in nodes), default=6)
        self.addr_w = max((len(n.address) for n in nodes), default=12)

    def write(self, text):
        with self.lock:
            try:
                print(text, file=sys.stderr if self.quiet else (self._stream or sys.stdout), flush=True)
            except BrokenPipeError:  # `fab ... | head`: the reader left; the run goes on
                pass

    def line(self, task, node, status, detail=""):
        self.write(
            f"{task:<12} {node.alias:<{self.alias_w}}  {node.address:<{self.addr_w}}  "
            f"{MARK.get(status, status):<7}  {detail}".rstrip()
        )

    def summary(self, nodes, failed, hops=()):
        """Closing lines: how many nodes are fine, and each failure's reason (a failed ``hops``' too:
        the jump host every node is reached through)."""
        ok = sum(1 for node in nodes if node.alias not in failed)
        if not failed:
            self.write(f"all {len(nodes)} node(s) ok")
            return
        self.write(f"{ok} of {len(nodes)} node(s) ok; failed:")
        for node in list(hops) + list(nodes):
            if node.alias in failed:
                task, reason = failed[node.alias]
                self.write(f"  {node.alias:<{self.alias_w}}  {node.address:<{self.addr_w}}  {task}: {reason}")


def columns(rows):
    """``rows`` of cells as lines of left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
