import sys, time
for i in range(1, 3001):
    print(i, flush=True)
    time.sleep(0.001)
