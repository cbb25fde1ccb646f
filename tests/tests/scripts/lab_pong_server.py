import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.settimeout(10)
s.bind(("10.77.0.2", 7777))
s.listen()
print("up", flush=True)
c, _ = s.accept()
c.sendall(b"pong")
