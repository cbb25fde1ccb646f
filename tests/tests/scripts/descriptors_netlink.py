import os, socket, time
os.closerange(3, 4096)
# A netlink socket: a kind no agent moves.
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
print("pid", os.getpid(), flush=True)
time.sleep(600)
