/* metrics.h - Prometheus text for /metrics: the server's counters, the
 * delivery latency histogram and what the engine adds (engine.h). */
#ifndef HERALD_PUSH_METRICS_H
#define HERALD_PUSH_METRICS_H

#include <stddef.h>

#include "push/push.h"

/* One gauge or counter. */
typedef struct push_metric {
  const char *name, *type, *help;
  double value;
} push_metric;

/* Appends "# HELP", "# TYPE" and the value of each of m[0..n) to out.
 * Returns 0, or -1 when out of memory (out then holds a prefix). */
int push_metrics_write(push_buf *out, const push_metric *m, size_t n);

#endif
