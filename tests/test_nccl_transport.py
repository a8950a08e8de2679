"""Unit tests: which transport NCCL chose, read from its own debug output (multinode/nccllog.py).

The excerpts are NCCL_DEBUG=INFO output in the formats NCCL 2.18 to 2.28 print (hosts and
addresses changed), as posted in NVIDIA/nccl issues: #451 (IB present in a container, sockets
used), #1038 (2.18, RoCE), #1267 (2.19, one node), #373 (2.20, the IBext plugin, merged RoCE
ports), #1925 (2.28, "Initialized NET plugin IB"), #284 (sockets between two nodes), #527 (AWS
EFA). Each is cut to the lines that matter plus some of what surrounds them.
"""

import pytest

from multinode.nccllog import Seen, described, hca_allowed, kind, parse, verdict
from multinode.render import render

IB_2_21 = """\
gpu-a:2104:2104 [0] NCCL INFO Bootstrap : Using ens7:10.0.0.7<0>
gpu-a:2104:2104 [0] NCCL INFO NET/Plugin : dlerror=libnccl-net.so: cannot open shared object file: No such file or directory No plugin found (libnccl-net.so), using internal implementation
gpu-a:2104:2104 [0] NCCL INFO cudaDriverVersion 12040
NCCL version 2.21.5+cuda12.4
gpu-a:2104:2231 [0] NCCL INFO NCCL_IB_HCA set to mlx5_0,mlx5_3
gpu-a:2104:2231 [0] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB [1]mlx5_3:1/IB [RO]; OOB ens7:10.0.0.7<0>
gpu-a:2104:2231 [0] NCCL INFO Using non-device net plugin version 0
gpu-a:2104:2231 [0] NCCL INFO Using network IB
gpu-a:2104:2231 [0] NCCL INFO comm 0x55d0c4f0 rank 0 nranks 16 cudaDev 0 nvmlDev 0 busId 18000 commId 0x5b1e - Init START
gpu-a:2104:2231 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/CUMEM/read
gpu-a:2104:2231 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via P2P/CUMEM/read
gpu-a:2104:2231 [0] NCCL INFO Channel 00/0 : 15[7] -> 0[0] [receive] via NET/IB/0/GDRDMA
gpu-a:2104:2231 [0] NCCL INFO Channel 02/0 : 0[0] -> 8[0] [send] via NET/IB/3(1)/GDRDMA
gpu-a:2104:2231 [0] NCCL INFO Connected all rings
gpu-a:2104:2231 [0] NCCL INFO Connected NVLS
"""

ROCE_2_18 = """\
host-2:38610:38610 [0] NCCL INFO NCCL_SOCKET_IFNAME set by environment to enp179s0f0
host-2:38610:38610 [0] NCCL INFO Bootstrap : Using enp179s0f0:10.1.2.2<0>
host-2:38610:38610 [0] NCCL INFO NCCL version 2.18.3+cuda12.2
host-2:38610:38610 [0] NCCL INFO NCCL_IB_HCA set to mlx5_0
host-2:38610:38610 [0] NCCL INFO NET/IB : ncclIbAsyncThreadMain start.
host-2:38610:38610 [0] NCCL INFO NET/IB : Using [0]mlx5_0:1/RoCE [RO]; OOB enp179s0f0:10.1.2.2<0>
host-2:38610:38610 [0] NCCL INFO Using network IB
host-2:38610:38621 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[0] [send] via NET/IB/0
host-2:38610:38621 [0] NCCL INFO Channel 00/0 : 1[0] -> 0[0] [receive] via NET/IB/0
"""

# NVIDIA/nccl#451: the HCA is active on the host, the container has no RDMA device.
CONTAINER_451 = """\
node1:88:88 [0] NCCL INFO Bootstrap : Using [0]bond0:10.2.0.2<0>
node1:88:88 [0] NCCL INFO NET/Plugin : No plugin found (libnccl-net.so), using internal implementation
node1:88:88 [0] NCCL INFO NCCL_IB_DISABLE set by environment to 0.
node1:88:88 [0] misc/ibvwrap.cc:212 NCCL WARN Call to ibv_open_device failed
node1:88:88 [0] transport/net_ib.cc:148 NCCL WARN NET/IB : Unable to open device mlx5_bond_0
node1:88:88 [0] NCCL INFO NET/IB : No device found.
node1:88:88 [0] NCCL INFO NET/Socket : Using [0]bond0:10.2.0.2<0>
node1:88:88 [0] NCCL INFO Using network Socket
NCCL version 2.7.8+cuda11.0
node1:88:120 [0] NCCL INFO Channel 00/02 :    0   1
node1:88:120 [0] NCCL INFO Channel 00 : 1[1000] -> 0[1000] [receive] via NET/Socket/0
node1:88:120 [0] NCCL INFO Channel 00 : 0[1000] -> 1[1000] [send] via NET/Socket/0
"""

DISABLED_2_23 = """\
rented-0:5521:5521 [0] NCCL INFO NCCL_SOCKET_IFNAME set by environment to ens7
rented-0:5521:5521 [0] NCCL INFO Bootstrap : Using ens7:10.0.0.7<0>
rented-0:5521:5521 [0] NCCL INFO NCCL version 2.23.4+cuda12.6
rented-0:5521:5590 [0] NCCL INFO NCCL_IB_DISABLE set by environment to 1.
rented-0:5521:5590 [0] NCCL INFO NET/Socket : Using [0]ens7:10.0.0.7<0>
rented-0:5521:5590 [0] NCCL INFO Using network Socket
rented-0:5521:5590 [0] NCCL INFO Channel 00/0 : 7[7] -> 8[0] [send] via NET/Socket/0
rented-0:5521:5590 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via SHM/direct/direct
"""

HCA_MISMATCH_2_25 = """\
n0:700:700 [0] NCCL INFO NCCL version 2.25.1+cuda12.8
n0:700:790 [0] NCCL INFO NCCL_IB_HCA set to mlx5_9
n0:700:790 [0] NCCL INFO NET/IB : No device found.
n0:700:790 [0] NCCL INFO NET/Socket : Using [0]eth1:10.3.0.5<0> [1]eth0:172.17.0.2<0>
n0:700:790 [0] NCCL INFO Using network Socket
n0:700:790 [0] NCCL INFO Channel 00/0 : 1[0] -> 0[0] [receive] via NET/Socket/1
"""

SINGLE_2_19 = """\
instance-8g:525781:525781 [0] NCCL INFO Bootstrap : Using ens7:10.128.0.31<0>
NCCL version 2.19.3+cuda12.3
instance-8g:525781:525957 [0] NCCL INFO NET/IB : No device found.
instance-8g:525781:525957 [0] NCCL INFO NET/Socket : Using [0]ens7:10.128.0.31<0>
instance-8g:525781:525957 [0] NCCL INFO Using network Socket
instance-8g:525781:525957 [0] NCCL INFO comm 0x55f9 rank 0 nranks 2 cudaDev 0 nvmlDev 0 busId 30 - Init START
instance-8g:525781:525957 [0] NCCL INFO Channel 00/0 : 0[0] -> 1[1] via P2P/IPC/read
instance-8g:525781:525957 [0] NCCL INFO Channel 01/0 : 0[0] -> 1[1] via SHM/direct/direct
"""

IBEXT_2_20 = """\
bigo:1884:1884 [0] NCCL INFO Bootstrap : Using bond0.526:10.4.106.9<0>
bigo:1884:2298 [0] NCCL INFO Plugin Path : /opt/hpcx/nccl_rdma_sharp_plugin/lib/libnccl-net.so
bigo:1884:2298 [0] NCCL INFO P2P plugin IBext_v8
bigo:1884:2298 [0] NCCL INFO NET/IB : Using [0]={[0] mlx5_2:1/RoCE, [1] mlx5_3:1/RoCE} [1]={[2] mlx5_0:1/RoCE, [3] mlx5_1:1/RoCE} [RO]; OOB bond0.526:10.4.106.9<0>
bigo:1884:2298 [0] NCCL INFO Using network IBext_v8
bigo:1884:2298 [0] NCCL INFO Channel 00/0 : 1[0] -> 2[0] [receive] via NET/IBext_v8/1
bigo:1884:2298 [0] NCCL INFO Channel 00/0 : 2[0] -> 0[0] [send] via NET/IBext_v8/1
"""

PLUGIN_2_28 = """\
nccl-0:2620971:2620971 [3] NCCL INFO NCCL version 2.28.9+cuda13.0
nccl-0:2620971:2620971 [3] NCCL INFO NCCL_IB_DISABLE set by environment to 0.
nccl-0:2620971:2620971 [3] NCCL INFO NCCL_IB_HCA set to mlx5_0
nccl-0:2620971:2620971 [3] NCCL INFO NET/IB : Using [0]mlx5_0:1/IB [RO]; OOB eth0:10.25.30.42<0>
nccl-0:2620971:2620971 [3] NCCL INFO Initialized NET plugin IB
nccl-0:2620971:2620971 [3] NCCL INFO Assigned NET plugin IB to comm
nccl-0:2620971:2620971 [3] NCCL INFO Using network IB
nccl-0:2620971:2621100 [3] NCCL INFO Channel 00/0 : 3[3] -> 7[3] [send] via NET/IB/0/GDRDMA
"""

EFA = """\
ip-10-0-178-25:416481:416522 [3] NCCL INFO Using network AWS Libfabric
ip-10-0-178-25:416481:416522 [3] NCCL INFO Channel 00/0 : 19[201d0] -> 10[201c0] [send] via NET/AWS Libfabric/0/GDRDMA
"""


@pytest.mark.parametrize("log, version, what, told", [
    (IB_2_21, "2.21.5", "InfiniBand", "InfiniBand (mlx5_0, mlx5_3; GPUDirect RDMA)"),
    (ROCE_2_18, "2.18.3", "RoCE", "RoCE (mlx5_0)"),
    (CONTAINER_451, "2.7.8", "sockets", "sockets (bond0)"),
    (DISABLED_2_23, "2.23.4", "sockets", "sockets (ens7)"),
    (HCA_MISMATCH_2_25, "2.25.1", "sockets", "sockets (eth1, eth0)"),
    (IBEXT_2_20, "", "RoCE", "RoCE (mlx5_0, mlx5_1, mlx5_2, mlx5_3)"),
    (PLUGIN_2_28, "2.28.9", "InfiniBand", "InfiniBand (mlx5_0; GPUDirect RDMA)"),
    (EFA, "", "AWS Libfabric", "AWS Libfabric (GPUDirect RDMA)"),
])
def test_what_nccl_used_between_nodes(log, version, what, told):
    seen = parse(log)
    assert (seen.version, kind(seen), described(seen)) == (version, what, told)


def test_within_a_node_p2p_shm_and_nvls():
    assert parse(IB_2_21).within == {"P2P/CUMEM", "NVLS"}
    assert parse(DISABLED_2_23).within == {"SHM"}
    seen = parse(SINGLE_2_19)
    assert seen.within == {"P2P/IPC", "SHM"} and seen.between == set()
    assert verdict(seen, {}, False, {}, between_nodes=False) == (
        None, "NCCL 2.19.3: within the node P2P/IPC, SHM (one node: no network between nodes)")


def test_prefixes_do_not_matter_mpirun_and_our_tag():
    mpirun = "\n".join(f"[1] {line}" for line in ROCE_2_18.splitlines())
    ours = "\n".join(f"NCCL_LOG {line}" for line in ROCE_2_18.splitlines())
    assert parse(mpirun) == parse(ours) == parse(ROCE_2_18)
    assert parse("noise\nSMOKE_NODE {}\n") == Seen()


def test_the_network_line_alone_tells_when_no_channel_line_came():
    seen = parse("h:1:1 [0] NCCL INFO NET/Socket : Using [0]ens7:10.0.0.7<0>\nh:1:1 [0] NCCL INFO Using network Socket\n")
    assert (kind(seen), described(seen)) == ("sockets", "sockets (ens7)")
    assert kind(Seen()) == "" and described(Seen()) == ""


def test_infiniband_used_passes():
    problem, detail = verdict(parse(IB_2_21), {"mlx5_0": "InfiniBand", "mlx5_3": "InfiniBand"}, True, {}, True)
    assert problem is None
    assert detail == ("NCCL 2.21.5 between nodes: InfiniBand (mlx5_0, mlx5_3; GPUDirect RDMA); "
                      "within the node NVLS, P2P/CUMEM")


def test_sockets_without_an_active_hca_pass():
    assert verdict(parse(SINGLE_2_19), {}, False, {}, True)[0] is None
    problem, detail = verdict(parse(DISABLED_2_23), {}, False, {}, True)
    assert problem is None and detail == "NCCL 2.23.4 between nodes: sockets (ens7); within the node SHM"


def test_ib_present_sockets_used_in_a_container_without_rdma_device():
    problem, _ = verdict(parse(CONTAINER_451), {"mlx5_bond_0": "Ethernet"}, False, {}, True)
    assert problem == ("NCCL fell back to sockets between nodes though mlx5_bond_0 (RoCE) is active here: "
                       "no RDMA device in this container: /dev/infiniband is missing (start it with "
                       "--device=/dev/infiniband, or ask the provider for RDMA; NVIDIA/nccl#451)")
    # The device is there but NCCL could not open it: NCCL's own words.
    problem, _ = verdict(parse(CONTAINER_451), {"mlx5_bond_0": "Ethernet"}, True, {}, True)
    assert problem.endswith("is active here: NCCL could not use them: Call to ibv_open_device failed")


def test_ib_disabled_names_where_it_was_set():
    active = {"mlx5_0": "InfiniBand", "mlx5_1": "InfiniBand"}
    problem, _ = verdict(parse(DISABLED_2_23), active, True, {"NCCL_IB_DISABLE": ("1", "/etc/nccl.conf")}, True)
    assert problem == ("NCCL fell back to sockets between nodes though mlx5_0 (InfiniBand), mlx5_1 (InfiniBand) "
                       "are active here: NCCL_IB_DISABLE=1 is set (/etc/nccl.conf; multinode's nccl step writes it "
                       "where it finds no active HCA: rerun bootstrap)")
    # Without the launcher's settings, NCCL's own ENV line says it (the container case comes after).
    problem, _ = verdict(parse(DISABLED_2_23), active, False, {}, True)
    assert "NCCL_IB_DISABLE=1 is set (NCCL's log;" in problem


def test_hca_list_that_names_none_of_the_active_ones():
    problem, _ = verdict(parse(HCA_MISMATCH_2_25), {"mlx5_0": "InfiniBand"}, True, {}, True)
    assert problem.endswith("is active here: NCCL_IB_HCA=mlx5_9 (NCCL's log) names none of the active HCAs (mlx5_0)")
    env = {"NCCL_IB_HCA": ("^mlx5_0", "the environment")}
    problem, _ = verdict(parse(HCA_MISMATCH_2_25), {"mlx5_0": "InfiniBand"}, True, env, True)
    assert problem.endswith("NCCL_IB_HCA=^mlx5_0 (the environment) names none of the active HCAs (mlx5_0)")
    env = {"NCCL_NET": ("Socket", "~/.nccl.conf")}
    assert verdict(parse(HCA_MISMATCH_2_25), {"mlx5_0": "InfiniBand"}, True, env, True)[0].endswith(
        "NCCL_NET=Socket is set (~/.nccl.conf)")


def test_sockets_for_no_reason_said_points_at_the_log():
    seen = parse("h:1:1 [0] NCCL INFO Using network Socket\n")
    problem, detail = verdict(seen, {"mlx5_0": "InfiniBand"}, True, {}, True)
    assert problem.endswith("NCCL chose sockets all the same (see its NET lines: NCCL_DEBUG=INFO "
                            "NCCL_DEBUG_SUBSYS=INIT,NET)")
    assert detail == "NCCL between nodes: sockets"
    # Nothing said at all (NCCL too old to write NCCL_DEBUG_FILE, say): not reported, not failed.
    assert verdict(Seen(), {"mlx5_0": "InfiniBand"}, True, {}, True) == (None, "NCCL between nodes: not reported")


@pytest.mark.parametrize("spec, device, allowed", [
    ("mlx5", "mlx5_3", True), ("mlx5_0", "mlx5_0", True), ("mlx5_1", "mlx5_10", True),
    ("=mlx5_1", "mlx5_10", False), ("=mlx5_0,mlx5_1", "mlx5_1", True), ("mlx5_0:1,mlx5_1:1", "mlx5_1", True),
    ("^mlx5_1", "mlx5_0", True), ("^mlx5_1", "mlx5_1", False), ("^=mlx5_1", "mlx5_10", True), ("mlx4", "mlx5_0", False),
])
def test_nccl_ib_hca_syntax(spec, device, allowed):
    assert hca_allowed(spec, device) is allowed


def test_active_hcas_reads_sysfs_as_the_nccl_step_does(tmp_path):
    """The shell helper both the nccl step and smoke's launcher use: active ports only, each HCA once,
    with its link layer (RoCE's is Ethernet; none said: InfiniBand)."""
    import subprocess

    ib = tmp_path / "class/infiniband"
    for dev, ports in {"mlx5_0": ["4: ACTIVE", "4: ACTIVE"], "mlx5_1": ["1: DOWN"], "mlx5_2": ["4: ACTIVE"]}.items():
        for n, state in enumerate(ports, 1):
            (ib / dev / f"ports/{n}").mkdir(parents=True)
            (ib / dev / f"ports/{n}/state").write_text(state + "\n")
    (ib / "mlx5_2/ports/1/link_layer").write_text("Ethernet\n")
    script = render("facts.sh.j2") + 'active_hcas "$1"; active_hcas "$1/none"'
    r = subprocess.run(["bash", "-c", script, "t", str(tmp_path)], capture_output=True, text=True)
    assert (r.returncode, r.stdout, r.stderr) == (0, "mlx5_0 InfiniBand\nmlx5_2 Ethernet\n", "")
