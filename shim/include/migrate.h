/*
 * migrate.h: the API of libmigrate_shim.so for cooperating processes
 * (started by `migrate run`, or linked with -lmigrate_shim).
 *
 * Each call asks the agent of the host the process runs on now; it returns
 * 0 (or a count) on success and -1 if no agent answers or the buffer is
 * too small. Safe to call from any thread; not from a signal handler.
 *
 * Not built yet: callbacks around the freeze, migrate_request(), pid
 * virtualization, the TCP policies.
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

#ifdef __cplusplus
}
#endif

#endif
