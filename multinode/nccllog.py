"""What NCCL's own debug output says about the transport it chose, and whether that is the right one.

With ``NCCL_DEBUG=INFO`` (subsystems INIT, NET, ENV) every rank logs the
network NCCL picked at init and, per channel, how it reaches each peer:

    NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_1:1/RoCE [RO]; OOB eth0:10.0.0.7<0>
    NET/Socket : Using [0]eth0:10.0.0.7<0>
    Using network IB                          (Socket, IBext_v8, AWS Libfabric...)
    Channel 00/0 : 0[0] -> 1[0] [send] via NET/IB/0/GDRDMA
    Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read     (SHM/direct/direct, NVLS within a node)

`parse` reads any text holding such lines (a prefix ``host:pid:tid [dev] NCCL
INFO``, an mpirun ``[rank]``, our ``NCCL_LOG`` tag: all the same to it) into a
`Seen`; `verdict` says what one node's ranks used between nodes and fails a
node that has an active InfiniBand HCA where NCCL fell back to sockets, with
the likely cause (NVIDIA/nccl#451, #286: the commonest silent slowdown of a
rented cluster). Both are pure: the tests feed them recorded NCCL output.
"""

import re
from dataclasses import dataclass, field

VERSION_RE = re.compile(r"NCCL version (\d+\.\d+\.\d+)")
NET_USING_RE = re.compile(r"NET/(IB|Socket)\s*:\s*Using (.*)")
NETWORK_RE = re.compile(r"Using network (.+?)\s*$")
VIA_NET_RE = re.compile(r"via NET/([^/]+)/\d+(\S*)")
VIA_LOCAL_RE = re.compile(r"via (P2P/\w+|SHM|CollNet\w*|NVLS)")
HCA_RE = re.compile(r"([\w.-]+):\d+/(IB|RoCE)")
IFACE_RE = re.compile(r"\[\d+\]([\w.@-]+):")
ENV_RE = re.compile(r"(NCCL_IB_DISABLE|NCCL_IB_HCA|NCCL_NET) set (?:by environment )?to (\S+?)\.?\s*$")
IB_TROUBLE_RE = re.compile(r"NCCL WARN .*(NET/IB|ibv_)|NET/IB : No device found")
CAUSE_SOURCES = ("the environment", "~/.nccl.conf", "/etc/nccl.conf")


@dataclass
class Seen:
    """What one node's NCCL logs say (every field empty when they said nothing)."""
    version: str = ""
    network: str = ""  # "Using network X": the net NCCL initialised for inter-node traffic
    hcas: dict = field(default_factory=dict)  # {device: "IB" | "RoCE"} from "NET/IB : Using"
    ifaces: list = field(default_factory=list)  # interfaces of "NET/Socket : Using"
    between: set = field(default_factory=set)  # nets of the channel lines "via NET/X/n"
    gdr: bool = False  # a channel "via NET/.../GDRDMA": GPUDirect RDMA
    within: set = field(default_factory=set)  # P2P/CUMEM, SHM, NVLS ... within the node
    env: dict = field(default_factory=dict)  # NCCL_IB_DISABLE, NCCL_IB_HCA, NCCL_NET as NCCL logged them
    trouble: list = field(default_factory=list)  # NCCL's own words about InfiniBand failing


def parse(text):
    """`Seen` from the NCCL lines of ``text`` (other lines are ignored)."""
    seen = Seen()
    for line in text.splitlines():
        if "NCCL" not in line and "NET/" not in line and " via " not in line:
            continue
        if (m := VERSION_RE.search(line)) and not seen.version:
            seen.version = m.group(1)
        if m := NET_USING_RE.search(line):
            if m.group(1) == "IB":
                seen.hcas.update(HCA_RE.findall(m.group(2).split("; OOB")[0]))
            else:
                seen.ifaces += [i for i in IFACE_RE.findall(m.group(2)) if i not in seen.ifaces]
        if m := NETWORK_RE.search(line):
            seen.network = m.group(1)
        if m := VIA_NET_RE.search(line):
            seen.between.add(m.group(1))
            seen.gdr = seen.gdr or "GDRDMA" in m.group(2)
        elif m := VIA_LOCAL_RE.search(line):
            seen.within.add(m.group(1))
        elif re.search(r"\bConnected NVLS\b|\bNVLS comm\b", line):
            seen.within.add("NVLS")
        if m := ENV_RE.search(line):
            seen.env[m.group(1)] = m.group(2)
        if IB_TROUBLE_RE.search(line):
            text_of = line.split("NCCL WARN ", 1)[-1].split("NCCL INFO ", 1)[-1].strip()
            if text_of not in seen.trouble:
                seen.trouble.append(text_of)
    return seen


def kind(seen):
    """What NCCL used between nodes: "InfiniBand", "RoCE", "sockets", a plugin's name, or "" (not said)."""
    nets = seen.between or ({seen.network} if seen.network else set())
    if not nets:
        return ""
    if any(n.lower().startswith("socket") for n in nets):
        return "sockets"
    if all(n.upper().startswith("IB") for n in nets):
        links = set(seen.hcas.values())
        return "RoCE" if links == {"RoCE"} else "InfiniBand/RoCE" if links == {"IB", "RoCE"} else "InfiniBand"
    return ", ".join(sorted(nets))


def described(seen):
    """``InfiniBand (mlx5_0, mlx5_1; GPUDirect RDMA)``, ``sockets (eth0)``: what `kind` says, with its devices."""
    what = kind(seen)
    if what == "sockets":
        devices = seen.ifaces
    elif "InfiniBand" in what or what == "RoCE":
        devices = sorted(seen.hcas)
    else:
        devices = []
    extra = "; ".join(part for part in (", ".join(devices), "GPUDirect RDMA" if seen.gdr else "") if part)
    return f"{what} ({extra})" if extra else what


def hca_allowed(spec, device):
    """Whether NCCL_IB_HCA ``spec`` lets NCCL use ``device`` (NCCL's syntax: ``mlx5`` a prefix,
    ``=mlx5_0`` exact names, ``^mlx5_1`` all but those; ``:PORT`` after a name)."""
    exclude, spec = spec.startswith("^"), spec.lstrip("^")
    exact, spec = spec.startswith("="), spec.lstrip("=")
    names = [entry.split(":")[0] for entry in spec.split(",") if entry]
    hit = any(device == n if exact else device.startswith(n) for n in names)
    return not hit if exclude else hit


def cause(seen, active, rdma_device, env):
    """The likely reason NCCL fell back to sockets on a node with the ``active`` HCAs.

    ``env``: {name: (value, where)} of the NCCL settings the ranks got (the environment,
    ~/.nccl.conf, /etc/nccl.conf: NCCL reads them in that order, the first one wins)."""
    def setting(name):
        value, where = env.get(name, (seen.env.get(name), "NCCL's log"))
        return (value, where) if value else (None, None)

    disabled, where = setting("NCCL_IB_DISABLE")
    if disabled and disabled != "0":
        return (f"NCCL_IB_DISABLE={disabled} is set ({where}; multinode's nccl step writes it where it finds "
                "no active HCA: rerun bootstrap)")
    net, where = setting("NCCL_NET")
    if net and net.lower() == "socket":
        return f"NCCL_NET={net} is set ({where})"
    hcas, where = setting("NCCL_IB_HCA")
    if hcas and not any(hca_allowed(hcas, dev) for dev in active):
        return f"NCCL_IB_HCA={hcas} ({where}) names none of the active HCAs ({', '.join(sorted(active))})"
    if not rdma_device:
        return ("no RDMA device in this container: /dev/infiniband is missing (start it with "
                "--device=/dev/infiniband, or ask the provider for RDMA; NVIDIA/nccl#451)")
    if seen.trouble:
        return f"NCCL could not use them: {seen.trouble[0]}"
    return "NCCL chose sockets all the same (see its NET lines: NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT,NET)"


def verdict(seen, active, rdma_device, env, between_nodes):
    """(problem or None, detail) for one node: ``active`` its HCAs with an active port ({device:
    link layer}), ``rdma_device`` whether /dev/infiniband is there, ``between_nodes`` whether
    the job spans nodes (else only the transport within the node is told)."""
    version = f"NCCL {seen.version}" if seen.version else "NCCL"
    within = f"within the node {', '.join(sorted(seen.within))}" if seen.within else ""
    if not between_nodes:
        return None, f"{version}: {within or 'one rank'} (one node: no network between nodes)"
    what = kind(seen)
    detail = f"{version} between nodes: {described(seen) or 'not reported'}" + (f"; {within}" if within else "")
    if what == "sockets" and active:
        hcas = ", ".join(f"{dev} ({'InfiniBand' if link == 'InfiniBand' else 'RoCE'})"
                         for dev, link in sorted(active.items()))
        verb = "is" if len(active) == 1 else "are"
        return (f"NCCL fell back to sockets between nodes though {hcas} {verb} active here: "
                + cause(seen, active, rdma_device, env)), detail
    return None, detail
