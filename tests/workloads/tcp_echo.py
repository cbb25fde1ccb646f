"""A TCP echo server for the lab: echoes every line on every connection and
prints "conn ADDR", then "eof ADDR" or "reset ADDR" when a connection ends.
Usage: tcp_echo.py ADDR PORT"""
import os
import socket
import sys
import threading

os.closerange(3, 1 << 16)
lock = threading.Lock()


def say(line):
    with lock:
        print(line, flush=True)


def serve(conn, peer):
    say(f"conn {peer[0]}")
    try:
        for line in conn.makefile("rb"):
            conn.sendall(line)
        say(f"eof {peer[0]}")
    except ConnectionResetError:
        say(f"reset {peer[0]}")


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(8)
say(f"pid {os.getpid()}")
while True:
    c, peer = s.accept()
    threading.Thread(target=serve, args=(c, peer), daemon=True).start()
