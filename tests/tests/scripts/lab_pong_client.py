import socket
s = socket.create_connection(("10.77.0.2", 7777), timeout=5)
print(s.recv(4).decode())
