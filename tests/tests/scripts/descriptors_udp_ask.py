# Sends "hi" to UDP port 9000 of the address argv[1]; prints the answer.
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.sendto(b"hi", (sys.argv[1], 9000))
print(s.recvfrom(100)[0].decode(), end="")
