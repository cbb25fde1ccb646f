# Sends "hi" to the unix stream socket at the path argv[1]; prints the answer.
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b"hi")
print(s.recv(100).decode(), end="")
