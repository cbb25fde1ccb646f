/* A family of processes that checks itself after it moved.
 *
 * The parent maps 8 MiB of private memory (filled with a pattern before it
 * forks, so that its children share it copy-on-write) and one shared
 * anonymous page, then forks:
 *   - a child that exits at once with status 7 and stays a zombie;
 *   - a writer, leading a process group of its own, which drops its copy
 *     of the first 64 KiB (MADV_DONTNEED: zeros for it, not for its
 *     parent) and writes a sequence number into a pipe every 20 ms;
 *   - a reader, in the writer's group, which reads the numbers and checks
 *     that none is missing or repeated, and counts them in the shared page.
 * It prints "family ROOT WRITER READER ZOMBIE" and ticks.
 *
 * On SIGUSR1 (sent once the family moved) the parent checks that the reader
 * still counts, has each child check its own relations and its copy of the
 * private memory, reaps the zombie (status 7), ends the two children and
 * reaps them (SIGTERM), checks it had one SIGCHLD (the zombie's), and prints "verdict ok" or "verdict bad: WHY".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PRIVATE_BYTES (8u << 20)

struct shared {
    volatile uint64_t received; /* numbers the reader got, in order */
    volatile int broken;        /* the reader saw a gap or a repeat */
    volatile int check;         /* the parent asks the children to check */
    volatile int verdict[2];    /* each child's answer: 1 ok, 2 bad */
    char why[2][128];
};

static struct shared *sh;
static unsigned char *mem;
static volatile sig_atomic_t asked;
static volatile sig_atomic_t chld; /* SIGCHLDs received */

static void on_usr1(int sig) { (void)sig; asked = 1; }
static void on_chld(int sig) { (void)sig; chld++; }

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&t, &t) == -1 && errno == EINTR) {
    }
}

static unsigned char pattern(size_t i) { return (unsigned char)(i * 7 + i / 4096); }

/* Bytes at the start of the private memory the writer dropped. */
#define DROPPED (64u << 10)

/* NULL when the private memory holds its pattern after its first `zeros`
 * bytes, which read as zeros. */
static const char *memory_verdict_from(size_t zeros) {
    for (size_t i = 0; i < zeros; i++)
        if (mem[i] != 0)
            return "a page dropped before the move is not empty";
    for (size_t i = zeros; i < PRIVATE_BYTES; i++)
        if (mem[i] != pattern(i))
            return "the private memory differs";
    return NULL;
}

static const char *memory_verdict(void) { return memory_verdict_from(0); }

/* A child's check of itself: parent, group, memory (the writer dropped
 * its copy of the first DROPPED bytes). */
static void child_check(int slot, pid_t root, pid_t group) {
    const char *bad = NULL;
    if (getppid() != root)
        bad = "its parent changed";
    else if (getpgid(0) != group)
        bad = "its process group changed";
    else
        bad = memory_verdict_from(slot == 0 ? DROPPED : 0);
    if (bad)
        snprintf(sh->why[slot], sizeof sh->why[slot], "%s", bad);
    sh->verdict[slot] = bad ? 2 : 1;
}

static void writer(int fd, pid_t root) {
    for (uint64_t n = 0;; n++) {
        if (write(fd, &n, sizeof n) != sizeof n)
            _exit(3);
        if (sh->check && !sh->verdict[0])
            child_check(0, root, getpid());
        sleep_ms(20);
    }
}

static void reader(int fd, pid_t root, pid_t group) {
    for (uint64_t want = 0;; want++) {
        uint64_t n;
        ssize_t got = read(fd, &n, sizeof n);
        if (got == -1 && errno == EINTR) {
            want--;
            continue;
        }
        if (got != sizeof n)
            _exit(4);
        if (n != want)
            sh->broken = 1;
        sh->received = want + 1;
        if (sh->check && !sh->verdict[1])
            child_check(1, root, group);
    }
}

static int verdict(pid_t w, pid_t r, pid_t zombie) {
    const char *bad = NULL;
    uint64_t before = sh->received;
    sleep_ms(500);
    if (sh->received <= before)
        bad = "the reader stopped counting";
    else if (sh->broken)
        bad = "a number was lost or repeated in the pipe";
    if (!bad)
        bad = memory_verdict();
    sh->check = 1;
    for (int i = 0; i < 200 && (!sh->verdict[0] || !sh->verdict[1]); i++)
        sleep_ms(10);
    for (int i = 0; i < 2 && !bad; i++)
        if (sh->verdict[i] != 1)
            bad = sh->verdict[i] ? sh->why[i] : "a child did not answer";
    /* One child ended (the zombie, before the move): one SIGCHLD, none
     * made up by the move. */
    if (!bad && chld != 1)
        bad = chld ? "a SIGCHLD came that no child's end sent" : "no SIGCHLD for the zombie";
    int st = 0;
    if (!bad && (waitpid(zombie, &st, WNOHANG) != zombie || !WIFEXITED(st) ||
                 WEXITSTATUS(st) != 7))
        bad = "the zombie's status was not 7";
    kill(w, SIGTERM);
    kill(r, SIGTERM);
    pid_t kids[2] = {w, r};
    for (int i = 0; i < 2; i++) {
        st = 0;
        if (waitpid(kids[i], &st, 0) != kids[i] || !WIFSIGNALED(st) ||
            WTERMSIG(st) != SIGTERM)
            bad = bad ? bad : "a child's end was not reaped as SIGTERM";
    }
    if (bad)
        printf("verdict bad: %s\n", bad);
    else
        printf("verdict ok\n");
    fflush(stdout);
    return bad ? 1 : 0;
}

int main(void) {
    /* Only the standard streams: nothing that leads outside the family. */
    syscall(SYS_close_range, 3, ~0U, 0);
    setvbuf(stdout, NULL, _IOLBF, 0);
    sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    mem = mmap(NULL, PRIVATE_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
               0);
    if (sh == MAP_FAILED || mem == MAP_FAILED)
        return 2;
    for (size_t i = 0; i < PRIVATE_BYTES; i++)
        mem[i] = pattern(i);
    signal(SIGUSR1, on_usr1);
    struct sigaction sa = {.sa_handler = on_chld, .sa_flags = SA_RESTART};
    sigaction(SIGCHLD, &sa, NULL);
    pid_t root = getpid();
    pid_t zombie = fork();
    if (zombie == 0)
        _exit(7);
    int p[2];
    if (pipe(p) != 0)
        return 2;
    pid_t w = fork();
    if (w == 0) {
        /* Its copy of the first pages, dropped: it reads zeros there,
         * where its parent still has the pattern. */
        madvise(mem, DROPPED, MADV_DONTNEED);
        setpgid(0, 0);
        close(p[0]);
        writer(p[1], root);
    }
    setpgid(w, w);
    pid_t r = fork();
    if (r == 0) {
        setpgid(0, w);
        close(p[1]);
        reader(p[0], root, w);
    }
    setpgid(r, w);
    close(p[0]);
    close(p[1]);
    printf("pid %d\nfamily %d %d %d %d\n", root, root, w, r, zombie);
    for (unsigned tick = 0; !asked; tick++) {
        printf("tick %u %llu\n", tick, (unsigned long long)sh->received);
        sleep_ms(100);
    }
    return verdict(w, r, zombie);
}
