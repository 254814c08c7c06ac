/* The benchmark's leader-only job in C: its first instruction reads CLOCK_MONOTONIC
 * (the clock every process of the run shares, Python's time.monotonic()), so "the
 * job is running" is measured at the job's first instruction, not after an
 * interpreter's start-up. Then, as bench/jobs/marker.py: one JSON line "start" with
 * that time to $BENCH_RECORD, a non-blocking exclusive flock(2) on $BENCH_LOCK (the
 * test suite's overlap detector: a second leader job finds it taken, records
 * "overlap" and waits for the lock), and sleep until a signal ends it (SIGTERM keeps
 * its default action, so the stop path of a handover is measured, not a job's own
 * grace). Built by bench/run.py with the system's cc at the start of a run. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

static void record(const char *kind, const struct timespec *at) {
    const char *path = getenv("BENCH_RECORD");
    const char *candidate = getenv("ZKLEADER_CANDIDATE");
    const char *token = getenv("ZKLEADER_FENCING_TOKEN");
    char line[512];
    int n = snprintf(line, sizeof line,
                     "{\"kind\": \"%s\", \"candidate\": \"%s\", \"token\": \"%s\", \"pid\": %d, \"t\": %ld.%09ld}\n",
                     kind, candidate ? candidate : "", token ? token : "", (int)getpid(), (long)at->tv_sec,
                     at->tv_nsec);
    int fd = path ? open(path, O_WRONLY | O_APPEND | O_CREAT, 0644) : -1;
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) != n) { /* best effort */ }
        close(fd);
    }
}

int main(void) {
    struct timespec started;
    clock_gettime(CLOCK_MONOTONIC, &started);
    record("start", &started);
    const char *lock_path = getenv("BENCH_LOCK");
    int lock = lock_path ? open(lock_path, O_RDWR | O_CREAT, 0644) : -1;
    if (lock >= 0 && flock(lock, LOCK_EX | LOCK_NB) != 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        record("overlap", &now);
        /* Hold the lock once the other job is gone, so that the next overlap is seen too. */
        while (flock(lock, LOCK_EX) != 0) {}
    }
    for (;;)
        pause();
}
