/* bench_proc.h - what the load generators (`herald bench`) read about
 * processes from /proc, and the sentence that says which side limited a
 * run. */
#ifndef HERALD_APP_BENCH_PROC_H
#define HERALD_APP_BENCH_PROC_H

#include <stddef.h>
#include <stdint.h>

#define BP_MAX_THREADS 512

/* CPU time of a process, in all and per thread, at one moment. */
typedef struct bp_snap {
  int ok;     /* 1: /proc/PID/stat was read */
  double cpu; /* utime + stime of the whole process, seconds */
  size_t n;   /* threads read from /proc/PID/task (at most BP_MAX_THREADS) */
  long tid[BP_MAX_THREADS];
  double tcpu[BP_MAX_THREADS];
} bp_snap;

/* utime + stime of this process, seconds. */
double bp_self_cpu(void);

/* Fills *s for pid (s->ok == 0 when the process cannot be read). */
void bp_read(long pid, bp_snap *s);

/* The busiest thread between two snapshots: its CPU seconds (or -1 when no
 * thread was seen in both). */
double bp_busiest_thread(const bp_snap *a, const bp_snap *b);

/* Online CPUs of this machine (at least 1). */
int bp_ncpu(void);

/* What limited a run. All CPU figures are seconds over a window of secs.
 * server_cpu and server_thread are < 0 when the server was not watched
 * (no --server-pid). reached: 1 when an open-loop rate was asked for and
 * reached (then nothing was the limit), 0 when it was not, -1 for a
 * closed-loop run. */
typedef struct bp_limit {
  double secs;
  double bench_cpu;
  double server_cpu;
  double server_thread;
  int reached;
  const char *more; /* how to load the server harder ("raise --rate") */
} bp_limit;

/* Writes one English sentence (no newline) into buf, and a short token
 * ("client", "server", "none", "latency", "unknown") into *who. */
void bp_verdict(const bp_limit *l, char *buf, size_t buflen, const char **who);

#endif
