#!/usr/bin/env python3
"""A raw edgellm wire-protocol client for tests: speaks ZMTP 3.0 (NULL
security, a DEALER) itself, so it can send what no edgellm device would:
requests for unknown sessions, batches over a session's limit, messages of
another protocol version, or never read what it asked for.
Usage: wire_client.py PORT  (a worker serving layers 2:4 of aidreams260K on
127.0.0.1:PORT with --insecure): checks the answers, prints "ok".
       wire_client.py PORT flood BYTES COUNT SECONDS: sends COUNT probes that
ask for BYTES each, then holds the connection for SECONDS without reading."""
import re
import socket
import struct
import sys
import time

def read_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("the worker closed the connection")
        b += c
    return b

def read_frame(s):
    flags = read_exact(s, 1)[0]
    n = struct.unpack(">Q", read_exact(s, 8))[0] if flags & 2 else read_exact(s, 1)[0]
    return read_exact(s, n)

def connect(port):
    s = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
    # greeting: signature, version 3.0, mechanism NULL, as-server 0, filler
    s.sendall(b"\xff" + b"\0" * 8 + b"\x7f" + b"\x03\x00" + b"NULL".ljust(20, b"\0") + b"\0" + b"\0" * 31)
    read_exact(s, 64)
    props = b"\x0bSocket-Type" + struct.pack(">I", 6) + b"DEALER"
    body = b"\x05READY" + props
    s.sendall(bytes([0x04, len(body)]) + body)
    read_frame(s)  # the worker's READY
    return s

def send(s, data):
    s.sendall(bytes([0x02]) + struct.pack(">Q", len(data)) + data)

def msg(t, session, seq, body, version=2):
    return struct.pack("<IHHQII", 0x50574C45, version, t, session, seq, len(body)) + body

def reply(s):
    f = read_frame(s)
    _, ver, t, session, seq, n = struct.unpack("<IHHQII", f[:24])
    text = f[32:].decode(errors="replace") if t == 7 else ""
    return ver, t, session, text, f[24:]

def open_body(identity, ctx=32, max_batch=2):
    return struct.pack("<IIIIIBBBB", 4, 64, 512, ctx, max_batch, 0, 1, 1, 0) + struct.pack("<IIQ", 2, 4, identity)

def forward_body(pos, n):
    return struct.pack("<IIBBH", pos, n, 0, 0, 0) + b"\0" * (4 * 64 * n)

if len(sys.argv) > 2 and sys.argv[2] == "flood":
    size, count, secs = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
    s = connect(sys.argv[1])
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # keep what the kernel reads for us small
    for i in range(count):
        send(s, msg(10, 0, 100 + i, struct.pack("<I", size) + b"\0" * 28))
    print("sent", flush=True)
    time.sleep(secs)
    sys.exit(0)

s = connect(sys.argv[1])
# a FORWARD for a session that does not exist
send(s, msg(3, 0x1234, 1, forward_body(0, 1)))
_, t, _, text, _ = reply(s)
assert t == 7 and "unknown or expired session" in text, (t, text)
# a version-1 device hears why, in its own layout
send(s, msg(5, 0, 2, b"", version=1))
ver, t, _, text, _ = reply(s)
assert ver == 1 and t == 7 and "protocol version 2, yours speaks 1" in text, (ver, t, text)
# OPEN with a wrong identity: the refusal names the worker's own
send(s, msg(1, 0, 3, open_body(0)))
_, t, _, text, _ = reply(s)
m = re.search(r"identity ([0-9a-f]{16})", text)
assert t == 7 and m, (t, text)
send(s, msg(1, 0, 4, open_body(int(m.group(1), 16))))
_, t, session, text, _ = reply(s)
assert t == 2 and session, (t, text)
# a batch over the session's limit (max_batch 2)
send(s, msg(3, session, 5, forward_body(0, 3)))
_, t, _, text, _ = reply(s)
assert t == 7 and "does not fit" in text, (t, text)
# a position past the next one (a gap)
send(s, msg(3, session, 6, forward_body(5, 1)))
_, t, _, text, _ = reply(s)
assert t == 7 and "does not fit" in text, (t, text)
# the session still works: logits of one row
send(s, msg(3, session, 7, forward_body(0, 2)))
_, t, _, text, body = reply(s)
assert t == 4, (t, text)
kind, dtype, hops, _, rows, row_len = struct.unpack("<BBBBII", body[:12])
assert kind == 1 and rows == 1 and row_len == 512 and hops == 1, (kind, rows, row_len, hops)
# CLOSE, then the session is gone
send(s, msg(5, session, 8, b""))
assert reply(s)[1] == 6
send(s, msg(3, session, 9, forward_body(2, 1)))
_, t, _, text, _ = reply(s)
assert t == 7 and "unknown or expired session" in text, (t, text)
print("ok")
