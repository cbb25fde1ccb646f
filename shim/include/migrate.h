/*
 * migrate.h: the API of libmigrate_shim.so for cooperating processes
 * (started by `migrate run`, which preloads the library, or linked with
 * -lmigrate_shim and started on a host whose agent runs).
 *
 * Virtual ids need no call: inside a cooperating process getpid(),
 * gettid(), getppid() and syscall(SYS_getpid) (and SYS_gettid,
 * SYS_getppid) keep the values the process had where it started, and
 * kill(), tgkill() and tkill() aimed at those ids reach its own threads
 * wherever it runs. These are async-signal-safe. Ids of other processes
 * and ids in other calls (waitpid, pidfd_open, /proc/self) are real ones.
 *
 * Functions return 0 (or a count) on success, -1 with errno on failure.
 * They are safe from any thread, not from a signal handler.
 */
#ifndef MIGRATE_H
#define MIGRATE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The host this process runs on now, NUL-terminated, into buf[len]. */
int migrate_current_host(char *buf, size_t len);

/* The host this process started on, NUL-terminated, into buf[len]. */
int migrate_home_host(char *buf, size_t len);

/* How many times this process has been migrated, or -1. */
int migrate_count(void);

/*
 * Callbacks around each migration, run in the order registered by the
 * library's own thread ("migrate-shim", started by the first
 * registration):
 *   - freeze callbacks just before the process is frozen (the agent
 *     waits for them, at most 10 s, then freezes anyway);
 *   - resume callbacks once it runs again, with the host it runs on (the
 *     same host if the migration failed after the freeze) and the
 *     descriptors reconnected there (`migrate run --tcp reconnect`).
 * Each runs once per migration. Returns 0, or -1 (EINVAL: no callback).
 */
typedef void (*migrate_freeze_fn)(void *arg);
typedef void (*migrate_resume_fn)(const char *host, const int *reconnected,
                                  size_t n_reconnected, void *arg);
int migrate_on_freeze(migrate_freeze_fn cb, void *arg);
int migrate_on_resume(migrate_resume_fn cb, void *arg);

/*
 * Asks the local agent to migrate this process to `host` (a peer name or
 * ADDR:PORT) and waits until it runs there: 0 then (the caller continues
 * on `host`). -1 with errno EACCES if the agent refused (the reason is in
 * its log), ECANCELED if the migration failed and the process runs on
 * here, ETIMEDOUT after two minutes.
 */
int migrate_request(const char *host);

#ifdef __cplusplus
}
#endif

#endif
