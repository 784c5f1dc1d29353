/* An LD_PRELOAD shim for tests/legacy_reference/generate.py: while FIXCLOCK_NS is set (unix
 * time in nanoseconds), clock_gettime(CLOCK_REALTIME) answers it instead of the system clock.
 * bittensor-drand 1.x reads the clock through Rust's SystemTime::now, which calls libc's
 * clock_gettime, so this pins the `now` of its get_encrypted_commit.
 *
 *   cc -O2 -shared -fPIC -o fixclock.so fixclock.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <time.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

int clock_gettime(clockid_t clock, struct timespec *out) {
    const char *fixed = getenv("FIXCLOCK_NS");
    if (clock == CLOCK_REALTIME && fixed != NULL) {
        unsigned long long ns = strtoull(fixed, NULL, 10);
        out->tv_sec = (time_t)(ns / 1000000000ULL);
        out->tv_nsec = (long)(ns % 1000000000ULL);
        return 0;
    }
    static clock_gettime_fn real;
    if (real == NULL) {
        real = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
    }
    return real(clock, out);
}
