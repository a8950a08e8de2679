"""What `fab status` shows: each node's status lines parsed, then a table (a row per node) or JSON.

A cell is a list of (text, tone) pieces: tone "" plain, "warn" (the worst value of a column
across the nodes) or "bad" (past a threshold: a GPU at 85°C, 95% of its memory, under
10 GiB or 5% of the workspace's disk free, /dev/shm under 1 GiB, a load of twice the CPUs,
Ray down where it should run, a node that did not answer). On a terminal the tones are
colours (rich, imported only there); without one the table is plain text.
"""

from dataclasses import dataclass, field

from . import protocol
from .report import columns

GIB = 2**30
HOT_C, FULL, FEW_BYTES, FEW_SHARE, SMALL_SHM, BUSY = 85, 0.95, 10 * GIB, 0.05, GIB, 2.0
TONES = {"": "", "warn": "yellow", "bad": "bold red"}
HEADER = ("node", "GPUs", "jobs", "disk free", "/dev/shm", "load", "Ray")


@dataclass
class Gpu:
    index: int
    util: float = None  # %
    used: float = None  # MiB
    total: float = None  # MiB
    temp: float = None  # °C
    power: float = None  # W


@dataclass
class NodeNow:
    gpus: list = field(default_factory=list)
    no_gpu: str = ""  # why there is no GPU line
    jobs: list = field(default_factory=list)
    disk: tuple = (None, None, "")  # (free bytes, total bytes, path)
    shm: tuple = (None, None)  # (size bytes, free bytes)
    load: tuple = (None, None, None, None)  # (1, 5, 15 minutes, CPUs)
    raylet: bool = False
    gcs: bool = None  # None: not the head


def number(text):
    """A value nvidia-smi or df gave, or None ("[N/A]", "[Not Supported]", "-")."""
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def parse(out):
    """`NodeNow` from the lines status.sh printed."""
    now = NodeNow()
    for line in protocol.said(out, "GPU_NOW"):
        fields = [number(f.strip()) for f in line.split(",")] + [None] * 6
        now.gpus.append(Gpu(int(fields[0] or 0), *fields[1:6]))
    now.no_gpu = next(iter(protocol.said(out, "NO_GPU")), "")
    now.jobs = protocol.said(out, "JOB_RUNNING")
    for free, total, path in (d.split(" ", 2) for d in protocol.said(out, "DISK")):
        now.disk = (kib(free), kib(total), path)
    for size, free in (s.split() for s in protocol.said(out, "SHM")):
        now.shm = (kib(size), kib(free))
    for values in (ln.split() for ln in protocol.said(out, "LOAD")):
        now.load = tuple(map(number, values[:4]))
    for raylet, gcs in (r.split() for r in protocol.said(out, "RAY_ALIVE")):
        now.raylet, now.gcs = raylet == "yes", None if gcs == "-" else gcs == "yes"
    return now


def kib(text):
    value = number(text)
    return None if value is None else value * 1024


def size(nbytes):
    """``64 MiB``, ``1.5 GiB``, ``812 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if nbytes < 1024 or unit == "TiB":
            return (f"{nbytes:.1f}".rstrip("0").rstrip(".") if nbytes < 10 else f"{nbytes:.0f}") + f" {unit}"
        nbytes /= 1024


def gpu_summary(gpus):
    """The GPUs of one node as (text, tone, measure) pieces: ``8 x 97% 70/80 GiB 78°C 690 W`` (mean
    utilization; the fullest GPU's memory; the hottest; the hungriest), then the GPU that stands
    out, if one does (far less busy than the others, or running hot), in red."""
    utils = [g.util for g in gpus if g.util is not None]
    fullest = max((g for g in gpus if g.used is not None and g.total), key=lambda g: g.used / g.total, default=None)
    temps = [g.temp for g in gpus if g.temp is not None]
    powers = [g.power for g in gpus if g.power is not None]
    pieces = [(f"{len(gpus)} x", "", "")]
    if utils:
        pieces.append((f" {sum(utils) / len(utils):.0f}%", "", "util"))
    if fullest:
        pieces.append((f" {fullest.used / 1024:.0f}/{fullest.total / 1024:.0f} GiB",
                       "bad" if fullest.used / fullest.total >= FULL else "", "memory"))
    if temps:
        pieces.append((f" {max(temps):.0f}°C", "bad" if max(temps) >= HOT_C else "", "temp"))
    if powers:
        pieces.append((f" {max(powers):.0f} W", "", ""))
    idle = min((g for g in gpus if g.util is not None), key=lambda g: g.util, default=None)
    hot = max((g for g in gpus if g.temp is not None), key=lambda g: g.temp, default=None)
    if idle and len(utils) > 1 and max(utils) - idle.util >= 30:
        pieces.append((f"  GPU{idle.index} {idle.util:.0f}%", "bad", ""))
    elif hot and len(temps) > 1 and hot.temp >= HOT_C:
        pieces.append((f"  GPU{hot.index} {hot.temp:.0f}°C", "bad", ""))
    return pieces


def measures(now):
    """{measure: (value, higher is worse)} of one node, for the worst of each column across nodes."""
    found = {}
    utils = [g.util for g in now.gpus if g.util is not None]
    if utils:
        found["util"] = (sum(utils) / len(utils), False)
    fractions = [g.used / g.total for g in now.gpus if g.used is not None and g.total]
    if fractions:
        found["memory"] = (max(fractions), True)
    temps = [g.temp for g in now.gpus if g.temp is not None]
    if temps:
        found["temp"] = (max(temps), True)
    if now.disk[0] is not None:
        found["disk"] = (now.disk[0], False)
    if now.shm[0] is not None:
        found["shm"] = (now.shm[0], False)
    if now.load[0] is not None and now.load[3]:
        found["load"] = (now.load[0] / now.load[3], True)
    return found


def worst(nows):
    """{measure: alias} of the node whose value is the worst, where it stands out: more than 10% from
    the best (two nodes' free space read a moment apart are the same). Utilization counts only while
    some node works (a mean of 50% or more): the idle GPUs of an idle cluster are fine."""
    found = {}
    per_node = {alias: measures(now) for alias, now in nows.items()}
    for name in ("util", "memory", "temp", "disk", "shm", "load"):
        values = {alias: m[name][0] for alias, m in per_node.items() if name in m}
        if len(values) < 2 or (name == "util" and max(values.values()) < 50):
            continue
        higher = next(m[name][1] for m in per_node.values() if name in m)
        bad, good = (max, min) if higher else (min, max)
        alias = bad(values, key=values.get)
        low, high = sorted((values[alias], good(values.values())))
        if high - low > 0.1 * max(abs(low), abs(high)):
            found[name] = alias
    return found


def row(alias, now, worst_of, ray_expected):
    """One node's cells (the header's columns)."""
    def tone(measure, bad):
        return "bad" if bad else "warn" if worst_of.get(measure) == alias else ""

    if now.gpus:
        gpus = [(text, style or (tone(measure, False) if measure else "")) for text, style, measure in gpu_summary(now.gpus)]
    else:
        gpus = [(f"no GPU ({now.no_gpu})" if now.no_gpu and now.no_gpu != "no nvidia-smi" else "no GPU",
                 "bad" if now.no_gpu.startswith("nvidia-smi fails") else "")]
    jobs = [(f"{len(now.jobs)}: {', '.join(now.jobs)}"[:40] if now.jobs else "–", "")]
    free, total, _ = now.disk
    disk = [("?", "") if free is None else
            (size(free), tone("disk", free < FEW_BYTES or (total and free / total < FEW_SHARE)))]
    shm = [("?", "") if now.shm[0] is None else (size(now.shm[0]), tone("shm", now.shm[0] < SMALL_SHM))]
    one, _, _, cpus = now.load
    load = [("?", "") if one is None else (f"{one:g}/{cpus:.0f}", tone("load", bool(cpus) and one / cpus >= BUSY))]
    up = now.raylet and now.gcs is not False
    if up:
        ray = [("✓ head" if now.gcs else "✓", "")]
    elif ray_expected:
        ray = [("✗ " + ("no GCS" if now.raylet else "no raylet"), "bad")]
    else:
        ray = [("–", "")]
    return [[(alias, "")], gpus, jobs, disk, shm, load, ray]


def rows(nodes, nows, failed, ray_expected):
    """The table's rows, the header first: a row per node of ``nodes``, in order; a node that did not
    answer (``failed``: {alias: reason}) says so across its row."""
    worst_of = worst({n.alias: nows[n.alias] for n in nodes if n.alias in nows})
    found = [[[(h, "")] for h in HEADER]]
    for node in nodes:
        if node.alias in nows:
            found.append(row(node.alias, nows[node.alias], worst_of, ray_expected))
        else:
            found.append([[(node.alias, "")], [(f"no answer: {failed.get(node.alias, 'unknown')}", "bad")]]
                         + [[("", "")]] * (len(HEADER) - 2))
    return found


def plain(table):
    """The rows as plain text (no terminal: no colour)."""
    return "\n".join(columns([["".join(text for text, _ in cell) for cell in r] for r in table]))


def rich_table(table, title=""):
    """The rows as a rich Table, each tone a colour (rich imported here, on a terminal alone)."""
    from rich.table import Table
    from rich.text import Text

    shown = Table(box=None, pad_edge=False, title=title or None, title_justify="left", title_style="")
    for cell in table[0]:
        shown.add_column(cell[0][0], header_style="bold", no_wrap=True)
    for r in table[1:]:
        shown.add_row(*[Text.assemble(*[(text, TONES[tone]) for text, tone in cell]) for cell in r])
    return shown


def as_json(node, now, failed):
    """One node's status for ``--json``."""
    if now is None:
        return {"public": node.public, "private": node.private, "failed": failed or "no answer"}
    return {
        "public": node.public, "private": node.private, "failed": None,
        "gpus": [{"index": g.index, "utilization_pct": g.util, "memory_used_mib": g.used,
                  "memory_total_mib": g.total, "temperature_c": g.temp, "power_w": g.power} for g in now.gpus],
        "no_gpu": now.no_gpu or None,
        "jobs": now.jobs,
        "disk": {"path": now.disk[2], "free_bytes": now.disk[0], "total_bytes": now.disk[1]},
        "shm": {"size_bytes": now.shm[0], "free_bytes": now.shm[1]},
        "load": dict(zip(("1m", "5m", "15m", "cpus"), now.load)),
        "ray": {"raylet": now.raylet, "gcs": now.gcs},
    }
