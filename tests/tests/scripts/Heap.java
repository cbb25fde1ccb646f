// A JVM workload: fills a heap array of N MiB with a known pattern, keeps
// four threads allocating and dropping strings (the JIT compiles them, the
// GC collects behind them), prints `tick <n> <nanoTime> <count>` every
// 100 ms, and when the file named by its second argument appears, deletes
// it and checks every word: `verify ok` or `verify FAIL`.
import java.io.File;
public class Heap {
    static long pattern(int i) { return (long) i * 0x9E3779B97F4A7C15L ^ 0x5DEECE66DL; }
    public static void main(String[] a) throws Exception {
        int mib = Integer.parseInt(a[0]);
        String trigger = a[1];
        long[] heap = new long[mib * 131072];
        for (int i = 0; i < heap.length; i++) heap[i] = pattern(i);
        final long[] counts = new long[4];
        for (int t = 0; t < 4; t++) {
            final int k = t;
            Thread th = new Thread(() -> {
                java.util.ArrayList<String> junk = new java.util.ArrayList<>();
                while (true) {
                    junk.add(Long.toString(counts[k]++));
                    if (junk.size() > 10000) junk = new java.util.ArrayList<>();
                }
            });
            th.setDaemon(true);
            th.start();
        }
        System.out.println("pid " + ProcessHandle.current().pid());
        System.out.println("ready");
        int n = 0;
        while (true) {
            Thread.sleep(100);
            n++;
            System.out.println("tick " + n + " " + System.nanoTime() + " " + counts[0]);
            if (new File(trigger).exists()) {
                new File(trigger).delete();
                boolean ok = true;
                for (int i = 0; i < heap.length; i++) if (heap[i] != pattern(i)) { ok = false; break; }
                System.out.println(ok ? "verify ok" : "verify FAIL");
            }
        }
    }
}
