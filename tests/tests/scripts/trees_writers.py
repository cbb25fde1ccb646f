# A parent and its child writing to one inherited stdout, one write per
# line so that their lines never mix: `trees_writers.py COUNT DELAY_MS
# NAME EXIT` prints "pid <parent>", then COUNT lines "<NAME> <n>" from
# the parent and "child <n>" from the child, DELAY_MS apart; the parent
# waits for the child and exits with EXIT.
import os
import sys
import time

count, delay, name, code = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
os.closerange(3, 65536)
os.write(1, f"pid {os.getpid()}\n".encode())
child = os.fork()
me = "child" if child == 0 else name
for i in range(1, count + 1):
    os.write(1, f"{me} {i}\n".encode())
    time.sleep(delay / 1000)
if child:
    os.waitpid(child, 0)
    sys.exit(code)
os._exit(0)
