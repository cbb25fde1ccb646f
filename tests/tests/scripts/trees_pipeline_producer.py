# The start of a pipeline: "line <n>" every 20 ms, forever.
import itertools, time

for i in itertools.count():
    print("line", i, flush=True)
    time.sleep(0.02)
