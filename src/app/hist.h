/* hist.h - a log-linear latency histogram for the load generators
 * (`herald bench`): exact below 256 ns, then 128 steps per power of two
 * (under 1 % error), clamped at 60 s. Fixed size, no allocation. */
#ifndef HERALD_APP_HIST_H
#define HERALD_APP_HIST_H

#include <stddef.h>
#include <stdint.h>

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS) /* linear steps per power of two */
#define HIST_LINEAR (2u * HIST_SUB)    /* values below this are exact */
#define HIST_MAX_NS 60000000000ull     /* 60 s: larger values are clamped */
#define HIST_OCTAVES 28                /* 2^8 .. 2^35 ns */
#define HIST_BUCKETS (HIST_LINEAR + HIST_OCTAVES * HIST_SUB)

typedef struct hist {
  uint64_t count[HIST_BUCKETS];
  uint64_t total;
  uint64_t max;
  double sum;
} hist;

static inline size_t hist_index(uint64_t v) {
  if (v < HIST_LINEAR) {
    return (size_t)v;
  }
  unsigned msb = 63u - (unsigned)__builtin_clzll(v); /* >= 8 */
  unsigned shift = msb - HIST_SUB_BITS;
  return HIST_LINEAR + (size_t)(msb - 8) * HIST_SUB +
         (size_t)((v >> shift) - HIST_SUB);
}

/* The lowest value of bucket i, and its width. */
static inline uint64_t hist_low(size_t i, uint64_t *width) {
  if (i < HIST_LINEAR) {
    *width = 1;
    return i;
  }
  size_t o = (i - HIST_LINEAR) / HIST_SUB, s = (i - HIST_LINEAR) % HIST_SUB;
  unsigned shift = (unsigned)o + 8 - HIST_SUB_BITS;
  *width = (uint64_t)1 << shift;
  return (uint64_t)(HIST_SUB + s) << shift;
}

static inline void hist_record(hist *h, uint64_t ns) {
  if (ns > HIST_MAX_NS) {
    ns = HIST_MAX_NS;
  }
  h->count[hist_index(ns)]++;
  h->total++;
  h->sum += (double)ns;
  if (ns > h->max) {
    h->max = ns;
  }
}

/* The value at quantile q (0..1) in microseconds: the middle of the bucket
 * that holds the ceil(q * total)-th smallest sample; 0 with no samples. */
static inline double hist_quantile_us(const hist *h, double q) {
  if (h->total == 0) {
    return 0;
  }
  uint64_t rank = (uint64_t)(q * (double)h->total + 0.999999);
  if (rank < 1) {
    rank = 1;
  }
  uint64_t seen = 0;
  for (size_t i = 0; i < HIST_BUCKETS; i++) {
    seen += h->count[i];
    if (seen >= rank) {
      uint64_t width;
      uint64_t low = hist_low(i, &width);
      double mid = (double)low + (double)(width - 1) / 2.0;
      if (mid > (double)h->max) {
        mid = (double)h->max;
      }
      return mid / 1000.0;
    }
  }
  return (double)h->max / 1000.0;
}

#endif
