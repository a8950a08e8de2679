# Which nodes Ray's GCS lists as alive, asked on the head: ADDRESS WAIT PRIVATE...
# Waits up to WAIT seconds until every PRIVATE address is an alive node, prints
# "RAY_MEMBERS [alive addresses]" and exits 1 if one is missing.
#
# First without importing ray (half a second of CPU, the slowest part of verify):
# one gRPC call, NodeInfoGcsService/GetAllNodeInfo, over the GCS's plain HTTP/2
# port, written with the standard library (HTTP/2: RFC 9113, HPACK: RFC 7541,
# gRPC over HTTP/2: grpc.io's PROTOCOL-HTTP2; the messages: Ray's gcs_service.proto
# and gcs.proto, whose field numbers protobuf keeps stable). Where that cannot
# answer (TLS, token authentication, another protocol), Ray itself is asked:
# GcsClient (no driver), else ray.init and ray.nodes().
import json
import os
import socket
import struct
import sys
import time

address, wait, want = sys.argv[1], float(sys.argv[2]), set(sys.argv[3:])
deadline = time.time() + wait


def varint(buf, i):
    shift = value = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def fields(buf):
    """(number, value) of each field of protobuf message ``buf``: ints and bytes."""
    i = 0
    while i < len(buf):
        key, i = varint(buf, i)
        kind = key & 7
        if kind == 0:
            value, i = varint(buf, i)
        elif kind == 2:
            size, i = varint(buf, i)
            value, i = buf[i:i + size], i + size
        elif kind in (1, 5):
            size = 8 if kind == 1 else 4
            value, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"protobuf wire type {kind}")
        yield key >> 3, value


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def hpack(name, value):  # a literal header field, not indexed, no Huffman coding
    def string(s):
        s = s.encode()
        assert len(s) < 127
        return bytes([len(s)]) + s
    return b"\x00" + string(name) + string(value)


def read_exactly(sock, size):
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("the GCS closed the connection")
        data += chunk
    return bytes(data)


def grpc_members():
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        big = 2**31 - 1
        headers = b"".join(hpack(k, v) for k, v in (
            (":method", "POST"), (":scheme", "http"), (":path", "/ray.rpc.NodeInfoGcsService/GetAllNodeInfo"),
            (":authority", address), ("content-type", "application/grpc"), ("te", "trailers")))
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
                     + frame(0x4, 0, 0, struct.pack(">HIHI", 0x2, 0, 0x4, big))  # SETTINGS: no push, big window
                     + frame(0x8, 0, 0, struct.pack(">I", big - 65535))  # WINDOW_UPDATE for the connection
                     + frame(0x1, 0x4, 1, headers)  # HEADERS, END_HEADERS
                     + frame(0x0, 0x1, 1, b"\x00\x00\x00\x00\x00"))  # DATA, END_STREAM: an empty request
        body = bytearray()
        while True:
            size, kind, flags, stream = struct.unpack(">IBBI", b"\x00" + read_exactly(sock, 9))
            payload = read_exactly(sock, size)
            if kind == 0x4 and not flags & 0x1:
                sock.sendall(frame(0x4, 0x1, 0))  # SETTINGS ACK
            elif kind == 0x6 and not flags & 0x1:
                sock.sendall(frame(0x6, 0x1, 0, payload))  # PING ACK
            elif kind in (0x3, 0x7):
                raise ConnectionError("the GCS refused the call (RST_STREAM/GOAWAY)")
            elif kind == 0x0 and stream == 1:
                if flags & 0x8:  # PADDED
                    payload = payload[1:len(payload) - payload[0]]
                body += payload
            if stream == 1 and flags & 0x1 and kind in (0x0, 0x1):  # END_STREAM
                break
    if len(body) < 5 or body[0] != 0:
        raise ConnectionError("no reply from the GCS (an error status, or a compressed reply)")
    alive, listed, total = set(), 0, 0
    for number, value in fields(bytes(body[5:5 + struct.unpack(">I", body[1:5])[0]])):
        if number == 1 and dict(fields(value)).get(1, 0) != 0:  # GcsStatus.code
            raise ConnectionError("the GCS answered with an error status")
        if number == 2:  # GcsNodeInfo: node_manager_address = 2, state = 7 (ALIVE = 0, the default)
            node = dict(fields(value))
            listed += 1
            if node.get(7, 0) == 0:
                alive.add(node[2].decode())
        if number == 3:  # total: more nodes than listed (a Ray that pages its answer)
            total = value
    if total > listed:
        raise ConnectionError(f"the GCS listed {listed} of {total} nodes")
    return alive


def ray_members():
    import ray
    try:
        from ray._raylet import GcsClient
        from ray.core.generated.gcs_pb2 import GcsNodeInfo
        gcs = GcsClient(address=address)
        return lambda: {n.node_manager_address for n in gcs.get_all_node_info(timeout=10).values()
                        if n.state == GcsNodeInfo.ALIVE}
    except (ImportError, AttributeError, TypeError):
        ray.init(address=address, logging_level="ERROR", log_to_driver=False)
        return lambda: {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]}


try:
    members = grpc_members
    alive = members()
except (OSError, ValueError, IndexError, KeyError, UnicodeError, struct.error) as exc:
    print(f"asking the GCS directly: {exc}; asking Ray", file=sys.stderr)
    members = ray_members()
    alive = members()
while not want <= alive and time.time() < deadline:
    time.sleep(1)
    try:
        alive = members()
    except Exception as exc:  # noqa: BLE001  a GCS restarting: asked again until the deadline
        print(f"asking the GCS: {exc}", file=sys.stderr)
print("RAY_MEMBERS " + json.dumps(sorted(alive)), flush=True)
os._exit(0 if want <= alive else 1)  # skip a driver's slow shutdown
