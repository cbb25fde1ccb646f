/*
 * The floor of a demand fault over a link, for the benchmark: the least a
 * post-copy fault can cost when all it does is fault -> request -> reply
 * -> UFFDIO_COPY, with nothing else (no encryption, no framing, one page).
 *
 *   fault_floor serve PORT            answers each 8-byte address with a
 *                                     4096-byte page, until the peer closes
 *   fault_floor stream PORT           writes pages to one peer as fast as
 *                                     it reads them, until it closes
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
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void full(int fd, void *buf, size_t n, int reading) {
    size_t at = 0;
    while (at < n) {
        ssize_t k = reading ? read(fd, (char *)buf + at, n - at) : write(fd, (char *)buf + at, n - at);
        if (k <= 0) {
            if (reading && k == 0 && at == 0)
                exit(0);
            die(reading ? "read" : "write");
        }
        at += (size_t)k;
    }
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
        full(c, &addr, sizeof addr, 1);
        memset(page, (int)(addr >> 12), PAGE);
        full(c, page, PAGE, 0);
    }
}

/* Pages of the stream, written while the peer reads them. */
static _Noreturn void stream(int port) {
    int c = accept_one(port);
    static char chunk[1 << 20];
    memset(chunk, 0x5a, sizeof chunk);
    for (;;)
        if (write(c, chunk, sizeof chunk) <= 0)
            exit(0);
}

static char *area;
static long pages, burst, gap_us;
static volatile int faulting_done;
static int stream_fd = -1;
static long streamed_mib;

/* Reads the stream into fresh memory (a new 64 MiB area each time one is
 * full, the old one given back) until the faults are done. */
static void *drain(void *arg) {
    (void)arg;
    const size_t span = 64u << 20;
    static char chunk[1 << 20];
    char *fresh = 0;
    size_t at = span;
    uint64_t total = 0;
    while (!faulting_done) {
        ssize_t k = read(stream_fd, chunk, sizeof chunk);
        if (k <= 0)
            break;
        if (at + (size_t)k > span) {
            if (fresh)
                munmap(fresh, span);
            fresh = mmap(0, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (fresh == MAP_FAILED)
                die("mmap");
            at = 0;
        }
        memcpy(fresh + at, chunk, (size_t)k);
        at += (size_t)k;
        total += (uint64_t)k;
    }
    if (fresh)
        munmap(fresh, span);
    streamed_mib = (long)(total >> 20);
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

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
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
    int u = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    if (u < 0)
        die("userfaultfd");
    struct uffdio_api api = {.api = UFFD_API};
    if (ioctl(u, UFFDIO_API, &api))
        die("UFFDIO_API");
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
    static char page[PAGE];
    long got = 0;
    while (got < n) {
        struct uffd_msg m;
        struct pollfd p = {.fd = u, .events = POLLIN};
        poll(&p, 1, -1);
        if (read(u, &m, sizeof m) != sizeof m)
            continue;
        uint64_t t0 = now_ns();
        if (m.event != UFFD_EVENT_PAGEFAULT)
            continue;
        uint64_t addr = m.arg.pagefault.address & ~(uint64_t)(PAGE - 1);
        full(s, &addr, sizeof addr, 0);
        full(s, page, PAGE, 1);
        struct uffdio_copy c = {.dst = addr, .src = (uint64_t)page, .len = PAGE};
        if (ioctl(u, UFFDIO_COPY, &c))
            die("UFFDIO_COPY");
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

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "serve"))
        serve(atoi(argv[2]));
    if (argc == 3 && !strcmp(argv[1], "stream"))
        stream(atoi(argv[2]));
    if ((argc == 5 || argc == 7 || argc == 8) && !strcmp(argv[1], "fault")) {
        if (argc >= 7) {
            burst = atol(argv[5]);
            gap_us = atol(argv[6]);
        }
        return fault(argv[2], atoi(argv[3]), atol(argv[4]), argc == 8 ? atoi(argv[7]) : 0);
    }
    fprintf(stderr, "usage: fault_floor serve PORT | stream PORT | fault ADDR PORT PAGES "
                    "[BURST GAP_US [STREAM_PORT]]\n");
    return 2;
}
