/* bench_proc.c - process CPU from /proc for `herald bench`, and the verdict
 * on which side limited a run.
 *
 * The verdict compares CPU shares, because both the bench and a herald
 * server run their connections on event loops: a loop that is busy all the
 * time cannot go faster, one that sleeps is waiting for the other side.
 * The bench is one thread, so it is the limit when it uses (nearly) one
 * core. The server may run several loops, so its busiest thread is what
 * counts, plus the machine as a whole when both share it. */
#include "app/bench_proc.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* A loop at this share of a core or more is taken as saturated. */
#define BUSY 0.90

double bp_self_cpu(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* utime + stime (fields 14 and 15) of a stat file, seconds; -1 when it
 * cannot be read. The command name, field 2, may hold spaces and
 * parentheses: the fields after it start after the last ')'. */
static double stat_cpu(const char *path) {
  char buf[1024];
  FILE *f = fopen(path, "r");
  if (f == NULL) {
    return -1;
  }
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *p = strrchr(buf, ')');
  unsigned long long ut = 0, st = 0;
  if (p == NULL ||
      sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
             &ut, &st) != 2) {
    return -1;
  }
  long hz = sysconf(_SC_CLK_TCK);
  return (double)(ut + st) / (double)(hz > 0 ? hz : 100);
}

void bp_read(long pid, bp_snap *s) {
  char path[96];
  memset(s, 0, sizeof(*s));
  snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
  s->cpu = stat_cpu(path);
  s->ok = s->cpu >= 0;
  if (!s->ok) {
    return;
  }
  snprintf(path, sizeof(path), "/proc/%ld/task", pid);
  DIR *d = opendir(path);
  if (d == NULL) {
    return;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL && s->n < BP_MAX_THREADS) {
    char *end;
    long tid = strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != 0) {
      continue;
    }
    snprintf(path, sizeof(path), "/proc/%ld/task/%ld/stat", pid, tid);
    double c = stat_cpu(path);
    if (c >= 0) {
      s->tid[s->n] = tid;
      s->tcpu[s->n] = c;
      s->n++;
    }
  }
  closedir(d);
}

double bp_busiest_thread(const bp_snap *a, const bp_snap *b) {
  double best = -1;
  for (size_t i = 0; i < b->n; i++) {
    for (size_t j = 0; j < a->n; j++) {
      if (a->tid[j] == b->tid[i]) {
        double d = b->tcpu[i] - a->tcpu[j];
        if (d > best) {
          best = d;
        }
        break;
      }
    }
  }
  return best;
}

int bp_ncpu(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

void bp_verdict(const bp_limit *l, char *buf, size_t buflen, const char **who) {
  double secs = l->secs > 0 ? l->secs : 1;
  double bench = l->bench_cpu / secs;
  int known = l->server_cpu >= 0;
  double server = known ? l->server_cpu / secs : 0;
  double thread = l->server_thread >= 0 ? l->server_thread / secs : server;
  int ncpu = bp_ncpu();
  if (l->reached == 1) {
    *who = "none";
    if (known) {
      snprintf(buf, buflen,
               "none: the rate asked for was reached (bench %.0f %% of a "
               "core, server %.0f %%)",
               100 * bench, 100 * server);
    } else {
      snprintf(buf, buflen,
               "none: the rate asked for was reached (bench %.0f %% of a "
               "core)",
               100 * bench);
    }
    return;
  }
  if (bench >= BUSY) {
    *who = "client";
    snprintf(buf, buflen,
             "the client: the bench's one thread used %.0f %% of a core; run "
             "several bench processes to load the server harder",
             100 * bench);
    return;
  }
  if (known && thread >= BUSY) {
    *who = "server";
    snprintf(buf, buflen,
             "the server: its busiest thread used %.0f %% of a core (%.0f %% "
             "in all) while the bench used %.0f %%",
             100 * thread, 100 * server, 100 * bench);
    return;
  }
  if (known && bench + server >= BUSY * ncpu) {
    *who = "machine";
    snprintf(buf, buflen,
             "the machine: the bench (%.0f %%) and the server (%.0f %%) "
             "together used its %d cores",
             100 * bench, 100 * server, ncpu);
    return;
  }
  if (!known) {
    *who = "unknown";
    snprintf(buf, buflen,
             "not the client (the bench used %.0f %% of a core); give "
             "--server-pid to see the server's share",
             100 * bench);
    return;
  }
  *who = "latency";
  snprintf(buf, buflen,
           "neither CPU: the bench used %.0f %% of a core and the server "
           "%.0f %%; the run waited on round trips (%s)",
           100 * bench, 100 * server, l->more ? l->more : "load it harder");
}
