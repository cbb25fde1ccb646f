/* A cooperating C program built against migrate.h.
 *   SIGUSR1: prints "query OK HOST HOME COUNT" (where it runs, where it
 *            started, how often it moved);
 *   SIGUSR2: prints "ids PID TID PPID SPID STID SPPID T2 T2FIRST KILL TGKILL":
 *            getpid/gettid/getppid, the same through syscall(2), the
 *            second thread's id now and at its start, and whether kill()
 *            and syscall(SYS_kill) to its own pid and tgkill() to the
 *            second thread's id arrived (1) or not (0);
 *   SIGHUP:  migrate_request() to the other lab host, then prints
 *            "request RC HOST".
 * Its callbacks print "freeze N" and "resume N HOST". */
#define _GNU_SOURCE
#include <errno.h>
#include <migrate.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t asked, ids, hop, kills;
static volatile pid_t urg_on, t2_now, t2_first;
static int freezes, resumes;

static void on_usr1(int sig) { (void)sig; asked = 1; }
static void on_usr2(int sig) { (void)sig; ids = 1; }
static void on_hup(int sig) { (void)sig; hop = 1; }
static void on_prof(int sig) { (void)sig; kills++; }
static void on_urg(int sig) { (void)sig; urg_on = gettid(); }

static void on_freeze(void *arg) {
    (void)arg;
    printf("freeze %d\n", ++freezes);
    fflush(stdout);
}

static void on_resume(const char *host, const int *fds, size_t n, void *arg) {
    (void)fds; (void)n; (void)arg;
    printf("resume %d %s\n", ++resumes, host);
    fflush(stdout);
}

static void *second(void *arg) {
    (void)arg;
    t2_first = gettid();
    for (;;) {
        t2_now = gettid();
        usleep(5000);
    }
    return NULL;
}

/* Waits up to 2 s for cond(). */
#define WAIT(cond) do { for (int i_ = 0; i_ < 200 && !(cond); i_++) usleep(10000); } while (0)

int main(void) {
    syscall(SYS_close_range, 3, ~0U, 0); /* only what the test gave us */
    signal(SIGUSR1, on_usr1);
    signal(SIGUSR2, on_usr2);
    signal(SIGHUP, on_hup);
    signal(SIGPROF, on_prof);
    signal(SIGURG, on_urg);
    if (migrate_on_freeze(on_freeze, NULL) || migrate_on_resume(on_resume, NULL)) {
        printf("callbacks not registered: %s\n", strerror(errno));
    }
    pthread_t t;
    pthread_create(&t, NULL, second, NULL);
    WAIT(t2_first != 0);
    printf("pid %d ppid %d tid2 %d\n", (int)getpid(), (int)getppid(), (int)t2_first);
    fflush(stdout);
    for (;;) {
        if (asked) {
            char host[64] = "?", home[64] = "?";
            asked = 0;
            int ok = migrate_current_host(host, sizeof host) == 0 &&
                     migrate_home_host(home, sizeof home) == 0;
            printf("query %d %s %s %d\n", ok, host, home, migrate_count());
            fflush(stdout);
        }
        if (ids) {
            ids = 0;
            int k0 = kills;
            kill(getpid(), SIGPROF);
            WAIT(kills > k0);
            syscall(SYS_kill, getpid(), SIGPROF);
            WAIT(kills > k0 + 1);
            pid_t target = t2_first;
            urg_on = 0;
            tgkill(getpid(), target, SIGURG);
            WAIT(urg_on != 0);
            int tg = urg_on == target;
            urg_on = 0;
            syscall(SYS_tgkill, getpid(), target, SIGURG);
            WAIT(urg_on != 0);
            printf("ids %d %d %d %ld %ld %ld %d %d %d %d\n", (int)getpid(), (int)gettid(),
                   (int)getppid(), syscall(SYS_getpid), syscall(SYS_gettid),
                   syscall(SYS_getppid), (int)t2_now, (int)t2_first, kills == k0 + 2,
                   tg && urg_on == target);
            fflush(stdout);
        }
        if (hop) {
            char host[64] = "?";
            hop = 0;
            migrate_current_host(host, sizeof host);
            const char *to = strcmp(host, "host1") == 0 ? "host2" : "host1";
            int rc = migrate_request(to);
            printf("request %d %s\n", rc, rc == 0 ? to : strerror(errno));
            fflush(stdout);
        }
        usleep(10000);
    }
}
