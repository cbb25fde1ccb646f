# A multiprocessing.Pool of four workers mapping over 400 numbers, each
# item taking 50 ms: prints "pool <worker pids>", "progress <k>" every 20
# results, then "result ok" if every square came back in order.
import multiprocessing as mp
import os
import time


def square(i):
    time.sleep(0.05)
    return i * i


if __name__ == "__main__":
    # Nothing that leads outside the tree (the lab leaks a descriptor).
    os.closerange(3, 4096)
    mp.set_start_method("fork")
    print("pid", os.getpid(), flush=True)
    with mp.Pool(4) as pool:
        print("pool", *[p.pid for p in pool._pool], flush=True)
        results = []
        for k, r in enumerate(pool.imap(square, range(400))):
            results.append(r)
            if k % 20 == 0:
                print("progress", k, flush=True)
        ok = results == [i * i for i in range(400)]
        print("result", "ok" if ok else "bad", flush=True)
