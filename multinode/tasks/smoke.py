"""smoke: prove a distributed job runs on the cluster, before paying for one.

Two parts, each on every node at once:

- Ray: from the head, one Ray task pinned to each node (holding its GPUs)
  reports the hostname, the GPUs Ray gave it, the NCCL/Gloo environment a
  task there gets and the GPUs nvidia-smi lists there. A node missing from
  Ray, a task that fails or does not run, an unset
  NCCL_SOCKET_IFNAME/GLOO_SOCKET_IFNAME, another number of GPUs than
  nvidia-smi lists, fewer GPUs than ``gpu.count``: that node fails.
- torch: when torch is in the workspace venv, a ``torch.distributed``
  all-reduce across all nodes and GPUs, launched as users launch training:
  on every node at once (over its own SSH connection, in the environment a
  plain ``ssh node cmd`` gets), a rank per GPU with the environment torchrun
  gives its workers, the head's private address as rendezvous. Not torchrun
  itself: its rendezvous store listens on every address of the head; ours,
  served by rank 0 (templates/smoke_torch.py), on the private one alone.
  NCCL with one rank per GPU where every node has GPUs, else Gloo with one
  rank per node. The result is checked, then timed: the time of one
  all-reduce and its bus bandwidth (nccl-tests' definition). Without torch
  it says it skipped this part, and why. With NCCL, which transport NCCL
  chose between nodes, from its own debug output (for smoke's ranks alone):
  a node with an active InfiniBand HCA where NCCL fell back to sockets
  fails, naming the likely cause (multinode/nccllog.py).

torchrun's way rather than Ray: it is how most training is started, and it
needs nothing in the venv but torch (Ray Train would add its own dependencies).
"""


from invoke import Collection, task

from ..paths import venv_bin, venv_dir
from .. import nccllog, protocol
from ..connections import NodeError
from ..raycluster import on_head
from ..render import command, program, render
from ..session import Outcome, checks_arguments, number_arg, session_of


def size_arg(session, size_mb=None, **_):
    return number_arg("size-mb", size_mb, session.options["smoke"]["size_mb"], float, 0.001, 16384, "MiB")


def bus_bandwidth(nbytes, seconds, world):
    """An all-reduce's (algorithm, bus) bandwidth in GB/s, as nccl-tests reports them."""
    algbw = nbytes / seconds / 1e9
    return algbw, algbw * 2 * (world - 1) / world


def ray_part(session, opts, timeout):
    """The Ray task on every node; fails the nodes whose task did not see what training needs."""
    head, nodes = session.head, session.alive()
    if len(session.nodes) < 2 or not opts["ray"]["enabled"]:
        why = "single node: no Ray cluster" if len(session.nodes) < 2 else "Ray is disabled (multinode.ray.enabled)"
        session.report.write(f"smoke: Ray part skipped: {why}")
        return
    expected = opts["gpu"]["count"]
    asked = on_head(session, "smoke-ray", venv_bin(opts, "python"), program("smoke_ray.py"), "SMOKE_RAY",
                    f"{head.private}:{opts['ray']['port']}", timeout, *[n.private for n in nodes],
                    timeout=timeout + opts["check_timeout"])
    if asked is None:
        return
    for node in nodes:
        got = asked.get(node.private, {"error": "no answer"})
        problem, detail = ray_problem(got, expected)
        if problem:
            session.fail(node, "smoke-ray", problem)
        else:
            session.report.line("smoke-ray", node, "ok", detail)


def ray_problem(got, expected):
    """(problem, detail) of one node's Ray task report.

    Ray's GPUs are compared with what ``nvidia-smi`` lists on the node, whatever ``gpu.count``
    says: Ray counts them once, at its start (a Ray started before the driver, or with
    CUDA_VISIBLE_DEVICES or ``--num-gpus``, counts others), and a job it schedules gets no more."""
    if "error" in got:
        return got["error"], ""
    env = got.get("env", {})
    unset = [k for k in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME") if not env.get(k)]
    gpus, listed = len(got.get("gpu_ids", [])), got.get("nvidia_smi")
    detail = (f"{got.get('hostname')}: {gpus} GPU(s) from Ray, "
              + " ".join(f"{k}={env[k]}" for k in sorted(env)))
    if unset:
        return f"a Ray task on {got.get('hostname')} sees no {', '.join(unset)} (rerun bootstrap: it restarts Ray)", detail
    if listed is not None and listed != gpus:
        return (f"Ray gives a task {gpus} GPU(s) on {got.get('hostname')}, nvidia-smi lists {listed} "
                "(Ray counts them when it starts: `ray stop` there, then rerun bootstrap)"), detail
    if expected and gpus < expected:
        return f"Ray gives a task {gpus} GPU(s) on {got.get('hostname')}, {expected} expected (multinode.gpu.count)", detail
    return None, detail


def torch_plan(probes):
    """From each node's probe ({alias: (torch, gpus)}): (backend, ranks per node) or (None, why skipped),
    and {alias: problem} for the nodes that cannot take part."""
    with_torch = {a for a, (torch, _) in probes.items() if torch != "none"}
    if not with_torch:
        return None, "torch is not in the workspace venv (add it to your repo's requirements to run the all-reduce)", {}
    problems = {a: f"torch is not in the workspace venv, but is on {', '.join(sorted(with_torch))}"
                for a in probes if a not in with_torch}
    versions = {probes[a][0] for a in with_torch}
    if len(versions) > 1:
        problems.update({a: f"torch {probes[a][0]}: the nodes differ ({'; '.join(sorted(versions))})"
                         for a in with_torch})
    counts = {a: gpus for a, (_, gpus) in probes.items()}
    if all(counts.values()) and len(set(counts.values())) == 1:
        return "nccl", next(iter(counts.values())), problems
    if not any(counts.values()):
        return "gloo", 1, problems
    usual = max(set(counts.values()), key=list(counts.values()).count)
    problems.update({a: f"{n} GPU(s), {usual} on the other nodes: one all-reduce needs the same on every node"
                     for a, n in counts.items() if n != usual})
    return ("nccl", usual, problems) if usual else ("gloo", 1, problems)


def launch_command(opts, nodes, rank, nproc, backend, size_mb, timeout):
    """The command that starts node ``rank``'s part of the all-reduce (its ``nproc`` ranks)."""
    venv = venv_dir(opts)
    return command("bash", "-c", render("smoke.sh.j2"), "smoke", "launch", venv, opts["nccl"]["sysfs_root"],
                   program("smoke_torch.py"), timeout,
                   len(nodes), rank, nproc, nodes[0].private, opts["smoke"]["port"],
                   backend, size_mb, opts["smoke"]["iters"], timeout)


def torch_part(session, opts, size_mb, timeout):
    """The all-reduce across every node and GPU, or the reason it was skipped."""
    venv = venv_dir(opts)
    probe = command("bash", "-c", render("smoke.sh.j2"), "smoke", "probe", venv)

    def ask(node, cxn):
        out = cxn.run(probe, hide=True, in_stream=False, timeout=opts["check_timeout"]).stdout
        torch, gpus = (next(iter(protocol.said(out, tag)), default) for tag, default in (("TORCH", "none"), ("GPUS", "0")))
        return Outcome("ok", value=(torch, int(gpus or 0)))

    probes = {a: o.value for a, o in session.each("smoke-torch", ask, quiet=True).items()}
    if not probes:
        return
    backend, nproc, problems = torch_plan(probes)
    if backend is None:
        session.report.write(f"smoke: torch part skipped: {nproc}")
        return
    for alias, problem in problems.items():
        session.fail(session.find(alias), "smoke-torch", problem)
    if problems:
        return
    nodes = session.alive()

    def run(node, cxn):
        cmd = launch_command(opts, nodes, nodes.index(node), nproc, backend, size_mb, timeout)
        result = cxn.run(cmd, hide=True, warn=True, in_stream=False, timeout=timeout + 30)
        errors = protocol.said(result.stdout, "SMOKE_ERROR")
        mine = protocol.tagged(result.stdout, "SMOKE_NODE")
        if result.exited or mine is None:
            last = (result.stderr.strip().splitlines() or [f"the launcher exited {result.exited}"])[-1]
            raise NodeError(errors[0] if errors else last)
        detail = f"{mine['ranks']} rank(s) on {mine['device']} ({mine['backend']}), all-reduce correct"
        problem, kind = None, None
        if backend == "nccl":
            problem, told, kind = transport(result.stdout, len(nodes) > 1)
            detail += f"; {told}"
        return Outcome("ok", detail, value=(protocol.tagged(result.stdout, "SMOKE"), problem, kind))

    done = session.each("smoke-torch", run, only=nodes, quiet=True)
    for node in nodes:
        if node.alias in done and done[node.alias].value[1]:
            session.fail(node, "smoke-torch", done[node.alias].value[1])
        elif node.alias in done:
            session.report.line("smoke-torch", node, "ok", done[node.alias].detail)
    kinds = {alias: o.value[2] for alias, o in done.items() if o.value[2]}
    if len(nodes) > 1 and kinds:
        same = set(kinds.values())
        session.report.write("smoke: NCCL between nodes: " + (
            f"{same.pop()} on every node" if len(same) == 1 and len(kinds) == len(nodes)
            else ", ".join(f"{a} {k}" for a, k in kinds.items())))
    summary = next((o.value[0] for o in done.values() if o.value[0]), None)
    if summary and summary["world"] == 1:
        session.report.write(f"smoke: all-reduce on a single rank ({summary['backend']}): correct; "
                             "no link to measure")
    elif summary:
        algbw, busbw = bus_bandwidth(summary["bytes"], summary["seconds"], summary["world"])
        session.report.write(
            f"smoke: all-reduce of {summary['bytes'] / 2**20:g} MiB over {summary['world']} rank(s) "
            f"({summary['backend']}): {summary['seconds'] * 1e3:.2f} ms, bus bandwidth {busbw:.2f} GB/s "
            f"(algorithm {algbw:.2f} GB/s)")


def transport(out, between_nodes):
    """(problem or None, what NCCL used, its kind) from a node's launcher output: its active HCAs and
    /dev/infiniband (RDMA), NCCL's own lines (NCCL_LOG) and settings (NCCL_ENV); see nccllog."""
    hcas, device = (protocol.said(out, "RDMA") or ["- missing"])[-1].split(" ", 1)
    active = dict(h.split("/", 1) for h in hcas.split(",") if "/" in h)
    env = {name: tuple(got) for name, got in (protocol.tagged(out, "NCCL_ENV") or {}).items()}
    seen = nccllog.parse("\n".join(protocol.said(out, "NCCL_LOG")))
    problem, told = nccllog.verdict(seen, active, device == "present", env, between_nodes)
    return problem, told, nccllog.kind(seen) if between_nodes else None


def smoke_arguments(session, size_mb=None, timeout=None, **_):
    size_arg(session, size_mb)
    timeout_arg(session, timeout)


def timeout_arg(session, timeout=None, **_):
    return number_arg("timeout", timeout, session.options["smoke"]["timeout"], int, 5, 3600, "seconds")


@checks_arguments(smoke_arguments)
@task(help={"size_mb": "MiB each rank all-reduces (default: multinode.smoke.size_mb, 64)",
            "timeout": "seconds each part may take (default: multinode.smoke.timeout, 300)"})
def smoke(c, size_mb=None, timeout=None):
    """Prove a distributed job runs: a Ray task on every node, then a torch all-reduce across all GPUs."""
    session = session_of(c)
    opts = session.options
    size, seconds = size_arg(session, size_mb), timeout_arg(session, timeout)
    ray_part(session, opts, seconds)
    torch_part(session, opts, size, seconds)


ns = Collection("smoke")
ns.add_task(smoke)
