import os, socket, time
os.closerange(3, 4096)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
print("pid", os.getpid(), flush=True)
time.sleep(600)
