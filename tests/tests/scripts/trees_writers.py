# A parent and its child writing to one inherited stdout: "root <n>" and
# "child <n>" lines, 1500 each, 4 ms apart; the root says its pid first
# and waits for the child at the end.
import os
import time

os.closerange(3, 4096)
os.write(1, f"pid {os.getpid()}\n".encode())
child = os.fork()
me = "child" if child == 0 else "root"
for i in range(1, 1501):
    # One write per line: the two processes' lines never mix.
    os.write(1, f"{me} {i}\n".encode())
    time.sleep(0.004)
if child:
    os.waitpid(child, 0)
