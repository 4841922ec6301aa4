/* limits.h - rate limits of `herald serve`: token buckets for what one
 * connection may ask per second, and a table of buckets per client IP for
 * how fast new connections may come from one address (docs/config.md,
 * "rate_limits"). Single-threaded, like the rest of the server. */
#ifndef HERALD_PUSH_LIMITS_H
#define HERALD_PUSH_LIMITS_H

#include <stddef.h>
#include <stdint.h>

/* A rate and a burst: up to burst at once, then rate per second. A rate of
 * 0 turns the limit off. */
typedef struct push_rate {
  uint32_t per_s;
  uint32_t burst;
} push_rate;

/* A bucket's state: milli-tokens and when it was last filled. A zeroed
 * bucket is full at its first use. */
typedef struct push_bucket {
  uint64_t mtokens;
  int64_t last_ms; /* 0: never used */
} push_bucket;

/* Takes one token at time now_ms (monotonic). Returns 1 when allowed, 0
 * when over the rate (nothing taken). */
int push_bucket_take(push_bucket *b, const push_rate *r, int64_t now_ms);

/* Buckets per client IP. At most PUSH_IP_TABLE_MAX addresses are tracked;
 * a full bucket carries no information, so push_ip_table_sweep drops
 * those. */
#define PUSH_IP_TABLE_MAX 65536

typedef struct push_ip_table push_ip_table;

/* Returns NULL when out of memory. */
push_ip_table *push_ip_table_new(void);
void push_ip_table_del(push_ip_table *t);

/* One new connection from ip (text, without the port). Returns 1 when
 * allowed, 0 when over the rate, -1 when the table is full of addresses
 * seen in the last seconds (refuse: the server is under a flood from many
 * addresses) or out of memory. */
int push_ip_take(push_ip_table *t, const char *ip, const push_rate *r,
                 int64_t now_ms);

/* Forgets addresses whose bucket has filled up again. Call about once a
 * second. */
void push_ip_table_sweep(push_ip_table *t, const push_rate *r, int64_t now_ms);

/* Addresses tracked now. */
size_t push_ip_table_size(const push_ip_table *t);

#endif
