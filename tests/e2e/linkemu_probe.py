"""Test peer for tests/e2e/test_linkemu.sh: a server and clients that measure what
`edgellm linkemu` does to a TCP path. Standard library only. Every timestamp is
time.monotonic(), which is CLOCK_MONOTONIC and so comparable between the server
and client processes on one machine: one-way delays are measured directly.

  server PORTFILE                  serve on 127.0.0.1:0, write the port to PORTFILE
  rtt PORT N                       N timestamped pings: rtt_ms, up_ms, down_ms (medians)
  upload PORT BYTES                bulk device->edge: mbit (at the receiver)
  download PORT BYTES              bulk edge->device: mbit (at the receiver)
  switch PORT CTLPORT BYTES AT CMD bulk upload; AT s after the start send CMD to the
                                   control port: before_mbit, after_mbit, reply
  refused PORT                     connect and expect the proxy to close: closed_s
"""
import json
import socket
import statistics
import sys
import threading
import time


def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("peer closed after %d of %d bytes" % (len(b), n))
        b += c
    return b


def rate_mbit(samples, t_from, t_to):
    """Bits per second over the receive samples (time, total bytes) in [t_from, t_to]."""
    inside = [s for s in samples if t_from <= s[0] <= t_to]
    if len(inside) < 2:
        return 0.0
    (t0, b0), (t1, b1) = inside[0], inside[-1]
    return (b1 - b0) * 8 / (t1 - t0) / 1e6


# ---------------------------------------------------------------- server

def serve_conn(c):
    with c:
        mode = recv_exact(c, 1)
        if mode == b"E":  # echo the receive time of every line
            f = c.makefile("rb")
            for line in f:
                t = time.monotonic()
                c.sendall(b"%.9f\n" % t)
        elif mode == b"S":  # sink: record (time, total) per recv until EOF, then report
            total, samples = 0, []
            while True:
                d = c.recv(1 << 16)
                if not d:
                    break
                total += len(d)
                samples.append((time.monotonic(), total))
            c.sendall(json.dumps(samples).encode())
        elif mode == b"D":  # source: send the asked number of bytes, then close
            n = int.from_bytes(recv_exact(c, 8), "little")
            chunk = b"d" * 65536
            while n > 0:
                c.sendall(chunk[: min(n, len(chunk))])
                n -= min(n, len(chunk))


def server(portfile):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(ls.getsockname()[1]))
    import os
    os.rename(portfile + ".tmp", portfile)
    while True:
        c, _ = ls.accept()
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve_conn, args=(c,), daemon=True).start()


# ---------------------------------------------------------------- clients

def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def rtt(port, n):
    s = connect(port)
    s.sendall(b"E")
    f = s.makefile("rb")
    rtts, ups, downs = [], [], []
    pad = b"x" * 48
    for _ in range(n):
        t0 = time.monotonic()
        s.sendall(pad + b"\n")
        ts = float(f.readline())
        t1 = time.monotonic()
        rtts.append(t1 - t0)
        ups.append(ts - t0)
        downs.append(t1 - ts)
    s.close()
    print("rtt_ms %.3f" % (statistics.median(rtts) * 1e3))
    print("up_ms %.3f" % (statistics.median(ups) * 1e3))
    print("down_ms %.3f" % (statistics.median(downs) * 1e3))


def upload(port, nbytes, at=None, ctlport=None, cmd=None):
    s = connect(port)
    s.sendall(b"S")
    data = b"u" * nbytes
    t_start = time.monotonic()
    sender = threading.Thread(target=lambda: (s.sendall(data), s.shutdown(socket.SHUT_WR)))
    sender.start()
    reply, t_switch = None, None
    if at is not None:
        time.sleep(max(0.0, t_start + at - time.monotonic()))
        with socket.create_connection(("127.0.0.1", ctlport), timeout=5) as cs:
            cs.sendall(cmd.encode() + b"\n")
            reply = cs.makefile("rb").readline().decode().strip()
        t_switch = time.monotonic()
    sender.join()
    samples = json.loads(b"".join(iter(lambda: s.recv(1 << 16), b"")))
    s.close()
    if samples[-1][1] != nbytes:
        raise SystemExit("received %d of %d bytes" % (samples[-1][1], nbytes))
    t_first, t_last = samples[0][0], samples[-1][0]
    if at is None:
        print("mbit %.3f" % rate_mbit(samples, t_first, t_last))
        print("seconds %.3f" % (t_last - t_first))
    else:
        # Skip the first 0.1 s, and 0.25 s after the switch: what the 100 ms
        # bottleneck buffer already held still leaves at the old rate.
        print("before_mbit %.3f" % rate_mbit(samples, t_first + 0.1, t_switch))
        print("after_mbit %.3f" % rate_mbit(samples, t_switch + 0.25, t_last))
        print("after_seconds %.3f" % (t_last - t_switch - 0.25))
        print("reply %s" % reply)


def download(port, nbytes):
    s = connect(port)
    s.sendall(b"D" + nbytes.to_bytes(8, "little"))
    total, samples = 0, []
    while True:
        d = s.recv(1 << 16)
        if not d:
            break
        total += len(d)
        samples.append((time.monotonic(), total))
    s.close()
    if total != nbytes:
        raise SystemExit("received %d of %d bytes" % (total, nbytes))
    print("mbit %.3f" % rate_mbit(samples, samples[0][0], samples[-1][0]))


def refused(port):
    s = connect(port)
    t0 = time.monotonic()
    try:
        d = s.recv(1)
    except ConnectionResetError:
        d = b""
    print("closed_s %.3f" % (time.monotonic() - t0) if d == b"" else "got data")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "server":
        server(args[0])
    elif cmd == "rtt":
        rtt(int(args[0]), int(args[1]))
    elif cmd == "upload":
        upload(int(args[0]), int(args[1]))
    elif cmd == "download":
        download(int(args[0]), int(args[1]))
    elif cmd == "switch":
        upload(int(args[0]), int(args[2]), float(args[3]), int(args[1]), args[4])
    elif cmd == "refused":
        refused(int(args[0]))
    else:
        raise SystemExit("unknown command " + cmd)
