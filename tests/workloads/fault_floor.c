/*
 * The floor of a demand fault over a link, for the benchmark: the least a
 * post-copy fault can cost when all it does is fault -> request -> reply
 * -> UFFDIO_COPY, with nothing else (no encryption, no framing, one page).
 *
 *   fault_floor serve PORT            answers each 8-byte address with a
 *                                     4096-byte page, until the peer closes
 *   fault_floor stream PORT [NICE [MIBPS]]
 *                                     writes pages to one peer as fast as
 *                                     it reads them, until it closes (at
 *                                     nice NICE if given; with MIBPS, no
 *                                     faster than MIBPS MiB a second)
 *   fault_floor fault ADDR PORT N [BURST GAP_US [STREAM_PORT]]
 *                                     maps N pages under a userfaultfd,
 *                                     touches them one by one from a thread
 *                                     (with BURST and GAP_US: BURST pages,
 *                                     then a sleep of GAP_US, as the ticking
 *                                     workload faults), and serves each
 *                                     fault from ADDR:PORT;
 *                                     prints "p50 US p99 US" of the latency
 *                                     from the fault's read off the
 *                                     userfaultfd to its thread woken (the
 *                                     UFFDIO_COPY returned), as the agent
 *                                     measures its own; with STREAM_PORT,
 *                                     while it faults a thread reads the
 *                                     stream of ADDR:STREAM_PORT and writes
 *                                     it into fresh memory, as a push does
 *                                     beside the faults (prints the MiB it
 *                                     took as a third figure).
 *   fault_floor ticks ADDR PORT STREAM_PORT MIB BURST GAP_US NICE [warm|uffd]
 *                                     the stall floor: ticks as the
 *                                     workload does (GAP_US asleep, then
 *                                     BURST fresh pages touched under a
 *                                     userfaultfd, each fault served from
 *                                     ADDR:PORT) while a thread at nice
 *                                     NICE reads MIB MiB of
 *                                     ADDR:STREAM_PORT into MIB MiB of
 *                                     fresh memory, until it has; then
 *                                     prints "tick N NS" for each tick
 *                                     (the realtime clock after its pages
 *                                     were in), as the workload does;
 *                                     with "warm", the stream overwrites
 *                                     one 64 MiB area touched before the
 *                                     ticks begin, so that no page it
 *                                     writes is new; with "uffd", it is
 *                                     installed with UFFDIO_COPY in pieces
 *                                     of 16 pages, as the agent installs
 *                                     its push, not written with memcpy.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static void die(const char *what) {
    perror(what);
    exit(1);
}

/* Reads or writes all `n` bytes; 0 if reading found the stream closed
 * before the first byte (the caller decides what an end there means), 1
 * once done. Any other short transfer ends the program. */
static int full(int fd, void *buf, size_t n, int reading) {
    size_t at = 0;
    while (at < n) {
        ssize_t k = reading ? read(fd, (char *)buf + at, n - at) : write(fd, (char *)buf + at, n - at);
        if (k <= 0) {
            if (reading && k == 0 && at == 0)
                return 0;
            die(reading ? "read" : "write");
        }
        at += (size_t)k;
    }
    return 1;
}

/* Listens on `port`, says so on stdout, and returns the first peer. */
static int accept_one(int port) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 1))
        die("listen");
    printf("listening\n");
    fflush(stdout);
    int c = accept(l, 0, 0);
    if (c < 0)
        die("accept");
    return c;
}

/* A TCP connection to `host`:`port`. */
static int connect_to(const char *host, int port) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    inet_pton(AF_INET, host, &a.sin_addr);
    if (connect(s, (void *)&a, sizeof a))
        die("connect");
    return s;
}

static _Noreturn void serve(int port) {
    int c = accept_one(port), one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    static char page[PAGE];
    for (;;) {
        uint64_t addr;
        if (!full(c, &addr, sizeof addr, 1))
            exit(0);
        memset(page, (int)(addr >> 12), PAGE);
        full(c, page, PAGE, 0);
    }
}

/* This thread at `nice`. */
static void set_nice(int nice) {
    if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), nice))
        die("setpriority");
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Pages of the stream, written while the peer reads them; with `mibps`
 * > 0, each MiB no sooner than its share of the time since the first. */
static _Noreturn void stream(int port, int nice, long mibps) {
    set_nice(nice);
    int c = accept_one(port);
    static char chunk[1 << 20];
    memset(chunk, 0x5a, sizeof chunk);
    const uint64_t start = now_ns();
    for (uint64_t sent = 0;; sent++) {
        if (mibps > 0) {
            uint64_t due = start + sent * 1000000000u / (uint64_t)mibps, now = now_ns();
            if (due > now) {
                struct timespec d = {.tv_sec = (time_t)((due - now) / 1000000000u),
                                     .tv_nsec = (long)((due - now) % 1000000000u)};
                nanosleep(&d, 0);
            }
        }
        if (write(c, chunk, sizeof chunk) <= 0)
            exit(0);
    }
}

static char *area;
static long pages, burst, gap_us;
static volatile int faulting_done;
static int stream_fd = -1;
static long streamed_mib;
static long stream_mib;         /* ticks: the MiB to read, then stop */
static int stream_nice;         /* ticks: the reading thread's nice */
static volatile int stream_done;
static enum { SINK_FRESH, SINK_WARM, SINK_UFFD } sink; /* ticks: where the stream goes */
static char *warm_sink;         /* SINK_WARM: the area the stream overwrites */
#define WARM_SINK_BYTES (64u << 20)
static int sink_uffd = -1;      /* SINK_UFFD: the userfaultfd it is installed through */
#define UFFD_PIECE (16 * PAGE)

/* A userfaultfd with `flags` (O_CLOEXEC and more), its API agreed. */
static int open_uffd(int flags) {
    int u = (int)syscall(SYS_userfaultfd, flags);
    if (u < 0)
        die("userfaultfd");
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl(u, UFFDIO_API, &api))
        die("UFFDIO_API");
    return u;
}

/* `n` bytes of `src` into `dst`, as the sink says. */
static void put(char *dst, const char *src, size_t n) {
    if (sink != SINK_UFFD) {
        memcpy(dst, src, n);
        return;
    }
    for (size_t off = 0; off < n; off += UFFD_PIECE) {
        struct uffdio_copy c = {.dst = (uint64_t)(dst + off),
                                .src = (uint64_t)(src + off),
                                .len = n - off < UFFD_PIECE ? n - off : UFFD_PIECE};
        if (ioctl(sink_uffd, UFFDIO_COPY, &c))
            die("UFFDIO_COPY");
    }
}

/* Reads the stream into fresh memory until the faults are done (a new 64
 * MiB area each time one is full, the old one given back), or for ticks
 * until it has read stream_mib MiB, all into one fresh area as a push
 * fills the process's memory (or, with a warm sink, into that one area
 * again and again). */
static void *drain(void *arg) {
    (void)arg;
    const int warm = sink == SINK_WARM;
    const size_t span = warm             ? WARM_SINK_BYTES
                        : stream_mib > 0 ? (size_t)stream_mib << 20
                                         : 64u << 20;
    static char chunk[1 << 20];
    char *fresh = warm_sink;
    size_t at = warm ? 0 : span;
    uint64_t total = 0;
    if (stream_mib > 0)
        set_nice(stream_nice);
    const uint64_t limit = (uint64_t)stream_mib << 20;
    while (!faulting_done && (stream_mib == 0 || total < limit)) {
        /* No further than the limit: past it a new area would be mapped
         * and the full one unmapped while the ticks are still timed. */
        size_t want = stream_mib > 0 && limit - total < sizeof chunk ? (size_t)(limit - total)
                                                                     : sizeof chunk;
        /* UFFDIO_COPY takes whole pages: read whole MiB (`want` is one). */
        ssize_t k = sink == SINK_UFFD ? (full(stream_fd, chunk, want, 1) ? (ssize_t)want : 0)
                                      : read(stream_fd, chunk, want);
        if (k <= 0)
            break;
        if (at + (size_t)k > span) {
            if (!warm) {
                if (fresh)
                    munmap(fresh, span);
                fresh = mmap(0, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (fresh == MAP_FAILED)
                    die("mmap");
            }
            if (sink == SINK_UFFD) {
                struct uffdio_register r = {.range = {.start = (uint64_t)fresh, .len = span},
                                            .mode = UFFDIO_REGISTER_MODE_MISSING};
                if (ioctl(sink_uffd, UFFDIO_REGISTER, &r))
                    die("UFFDIO_REGISTER");
            }
            at = 0;
        }
        put(fresh + at, chunk, (size_t)k);
        at += (size_t)k;
        total += (uint64_t)k;
    }
    streamed_mib = (long)(total >> 20);
    /* Before the area goes: the ticks end with the stream, not with the
     * kernel freeing what it took. */
    stream_done = 1;
    if (fresh && !warm)
        munmap(fresh, span);
    return 0;
}

static void *toucher(void *arg) {
    (void)arg;
    volatile char sum = 0;
    for (long i = 0; i < pages; i++) {
        if (burst > 0 && i > 0 && i % burst == 0) {
            struct timespec d = {.tv_sec = gap_us / 1000000, .tv_nsec = (gap_us % 1000000) * 1000};
            nanosleep(&d, 0);
        }
        sum += area[i * PAGE];
    }
    return 0;
}

static int cmp(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Serves one message of the userfaultfd `u`: a page fault's page asked of
 * the server on `s` and installed; 0 if it was not a page fault. */
static int serve_fault(int u, int s, const struct uffd_msg *m) {
    static char page[PAGE];
    if (m->event != UFFD_EVENT_PAGEFAULT)
        return 0;
    uint64_t addr = m->arg.pagefault.address & ~(uint64_t)(PAGE - 1);
    full(s, &addr, sizeof addr, 0);
    if (!full(s, page, PAGE, 1)) {
        fprintf(stderr, "fault_floor: the server closed before a page\n");
        exit(1);
    }
    struct uffdio_copy c = {.dst = addr, .src = (uint64_t)page, .len = PAGE};
    if (ioctl(u, UFFDIO_COPY, &c))
        die("UFFDIO_COPY");
    return 1;
}

static int fault(const char *host, int port, long n, int stream_port) {
    pages = n;
    pthread_t drainer;
    if (stream_port > 0) {
        stream_fd = connect_to(host, stream_port);
        pthread_create(&drainer, 0, drain, 0);
    }
    int s = connect_to(host, port), one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int u = open_uffd(O_CLOEXEC);
    area = mmap(0, (size_t)n * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED)
        die("mmap");
    struct uffdio_register r = {
        .range = {.start = (uint64_t)area, .len = (uint64_t)n * PAGE},
        .mode = UFFDIO_REGISTER_MODE_MISSING,
    };
    if (ioctl(u, UFFDIO_REGISTER, &r))
        die("UFFDIO_REGISTER");
    pthread_t t;
    pthread_create(&t, 0, toucher, 0);
    uint64_t *lat = calloc((size_t)n, sizeof *lat);
    long got = 0;
    while (got < n) {
        struct uffd_msg m;
        struct pollfd p = {.fd = u, .events = POLLIN};
        poll(&p, 1, -1);
        if (read(u, &m, sizeof m) != sizeof m)
            continue;
        uint64_t t0 = now_ns();
        if (serve_fault(u, s, &m))
            lat[got++] = now_ns() - t0;
    }
    pthread_join(t, 0);
    if (stream_port > 0) {
        faulting_done = 1;
        shutdown(stream_fd, SHUT_RDWR);
        pthread_join(drainer, 0);
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp);
    printf("p50 %.1f p99 %.1f", lat[n / 2] / 1e3, lat[n * 99 / 100] / 1e3);
    if (stream_port > 0)
        printf(" streamed %ld", streamed_mib);
    printf("\n");
    return 0;
}

/* ticks: the pages touched, reused (given back, so they fault again)
 * when all have been; when each tick was (the first MAX_TICKS). */
#define TICK_AREA_PAGES 32768L
#define MAX_TICKS 100000L
static uint64_t tick_at[MAX_TICKS];
static long ticks_done;
static volatile int ticking_done;

static uint64_t realtime_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void *ticker(void *arg) {
    (void)arg;
    long i = 0;
    while (!stream_done && ticks_done < MAX_TICKS) {
        struct timespec d = {.tv_sec = gap_us / 1000000, .tv_nsec = (gap_us % 1000000) * 1000};
        nanosleep(&d, 0);
        for (long k = 0; k < burst; k++, i++) {
            if (i == TICK_AREA_PAGES) {
                if (madvise(area, (size_t)TICK_AREA_PAGES * PAGE, MADV_DONTNEED))
                    die("madvise");
                i = 0;
            }
            area[i * PAGE] = 1;
        }
        tick_at[ticks_done++] = realtime_ns();
    }
    ticking_done = 1;
    return 0;
}

static int ticks(const char *host, int port, int stream_port) {
    stream_fd = connect_to(host, stream_port);
    int s = connect_to(host, port), one = 1;
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Non-blocking: the loop below polls with a timeout to see the
     * ticker end, and a read must not wait past it. */
    int u = open_uffd(O_CLOEXEC | O_NONBLOCK);
    size_t len = (size_t)TICK_AREA_PAGES * PAGE;
    area = mmap(0, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (area == MAP_FAILED)
        die("mmap");
    struct uffdio_register r = {
        .range = {.start = (uint64_t)area, .len = len},
        .mode = UFFDIO_REGISTER_MODE_MISSING,
    };
    if (ioctl(u, UFFDIO_REGISTER, &r))
        die("UFFDIO_REGISTER");
    if (sink == SINK_UFFD)
        sink_uffd = open_uffd(O_CLOEXEC);
    if (sink == SINK_WARM) {
        warm_sink = mmap(0, WARM_SINK_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                         -1, 0);
        if (warm_sink == MAP_FAILED)
            die("mmap");
        memset(warm_sink, 1, WARM_SINK_BYTES);
    }
    pthread_t drainer, t;
    pthread_create(&drainer, 0, drain, 0);
    pthread_create(&t, 0, ticker, 0);
    while (!ticking_done) {
        struct uffd_msg m;
        struct pollfd p = {.fd = u, .events = POLLIN};
        if (poll(&p, 1, 50) > 0 && read(u, &m, sizeof m) == sizeof m)
            serve_fault(u, s, &m);
    }
    pthread_join(t, 0);
    pthread_join(drainer, 0);
    if (streamed_mib < stream_mib) {
        fprintf(stderr, "the stream ended after %ld of %ld MiB\n", streamed_mib, stream_mib);
        return 1;
    }
    for (long k = 0; k < ticks_done; k++)
        printf("tick %ld %llu\n", k + 1, (unsigned long long)tick_at[k]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "serve"))
        serve(atoi(argv[2]));
    if (argc >= 3 && argc <= 5 && !strcmp(argv[1], "stream"))
        stream(atoi(argv[2]), argc >= 4 ? atoi(argv[3]) : 0, argc == 5 ? atol(argv[4]) : 0);
    if ((argc == 9 || argc == 10) && !strcmp(argv[1], "ticks")) {
        if (argc == 10 && strcmp(argv[9], "warm") && strcmp(argv[9], "uffd")) {
            fprintf(stderr, "ticks: the sink is warm or uffd, not %s\n", argv[9]);
            return 2;
        }
        sink = argc == 9 ? SINK_FRESH : !strcmp(argv[9], "warm") ? SINK_WARM : SINK_UFFD;
        stream_mib = atol(argv[5]);
        burst = atol(argv[6]);
        gap_us = atol(argv[7]);
        stream_nice = atoi(argv[8]);
        if (stream_mib <= 0 || burst <= 0 || gap_us <= 0) {
            fprintf(stderr, "ticks: MIB, BURST and GAP_US must be positive\n");
            return 2;
        }
        return ticks(argv[2], atoi(argv[3]), atoi(argv[4]));
    }
    if ((argc == 5 || argc == 7 || argc == 8) && !strcmp(argv[1], "fault")) {
        if (argc >= 7) {
            burst = atol(argv[5]);
            gap_us = atol(argv[6]);
        }
        return fault(argv[2], atoi(argv[3]), atol(argv[4]), argc == 8 ? atoi(argv[7]) : 0);
    }
    fprintf(stderr, "usage: fault_floor serve PORT | stream PORT [NICE [MIBPS]] | fault ADDR "
                    "PORT PAGES [BURST GAP_US [STREAM_PORT]] | ticks ADDR PORT STREAM_PORT MIB "
                    "BURST GAP_US NICE [warm|uffd]\n");
    return 2;
}
