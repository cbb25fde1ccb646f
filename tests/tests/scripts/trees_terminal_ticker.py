# A parent and its child on a terminal: "tick <n>" and "child <n>" lines,
# 400 each, 20 ms apart, one write each; the parent says its pid first,
# waits for the child and exits with 7.
import os
import sys
import time

os.closerange(3, 65536)
os.write(1, f"pid {os.getpid()}\n".encode())
child = os.fork()
me = "child" if child == 0 else "tick"
for i in range(1, 401):
    os.write(1, f"{me} {i}\n".encode())
    time.sleep(0.02)
if child:
    os.waitpid(child, 0)
    sys.exit(7)
os._exit(0)
