/* A cooperating C program: on SIGUSR1 it asks libmigrate_shim (migrate.h)
 * where it runs, where it started and how often it moved, and prints
 * "query OK HOST HOME COUNT". */
#define _GNU_SOURCE
#include <migrate.h>
#include <signal.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

static volatile sig_atomic_t asked;

static void on_usr1(int sig) { (void)sig; asked = 1; }

int main(void) {
    syscall(SYS_close_range, 3, ~0U, 0); /* only what the test gave us */
    signal(SIGUSR1, on_usr1);
    printf("pid %d\n", (int)getpid());
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
        usleep(10000);
    }
}
