import socket, struct, sys, time
def hdr(kind, length):
    return b"MGRT" + struct.pack("<HHQ", kind, 0, length)
bad = [
    b"GET / HTTP/1.0\r\n\r\n",
    hdr(1, 1 << 40),
    hdr(2, 1 << 40),
    hdr(9, 16),
    hdr(1, 64) + b"\xff" * 10,
    hdr(1, 8) + b"\xff" * 8,
    hdr(2, 16 + 4096) + struct.pack("<QI", 0x1001, 3) + b"\0" * 4,
    b"\0" * 100000,
    b"MGL1N" + b"\x00\x20" + b"\x01" * 32,
    b"MGL1N" + b"\xff\xff" + b"\x00" * 10,
    b"MGL1N" + b"\x00\x20" + b"\x01" * 32 + b"\x00\x40" + b"\x02" * 64,
    b"MGL1P" + hdr(1, 1 << 40),
    b"MGL1X",
]
prefix = b"MGL1P" if sys.argv[1] == "plain" else b""
idle = socket.create_connection(("10.77.0.1", 7070), timeout=5)
for b in bad:
    for target in ("tcp", "unix"):
        if target == "tcp":
            s = socket.create_connection(("10.77.0.1", 7070), timeout=5)
            b = prefix + b
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(5)
            s.connect("/run/migrate/agent.sock")
        try:
            s.sendall(b)
            s.shutdown(socket.SHUT_WR)
            s.recv(4096)
        except OSError:
            pass
        s.close()
print("sent", len(bad) * 2)
