/* node.c - answers about the whole node when it runs on several loops:
 * /metrics and /api/info sum every loop's figures.
 *
 * Each loop's counters are plain fields that only its own thread writes
 * (no atomic on the message path). To answer, the loop that got the
 * request posts a copy request to every other loop (herald_loop_post); each
 * copies its own figures into its slot, and the last one posts the answer
 * back to the asking loop, which sums the slots into a copy of its own
 * server and renders that. With one loop the answer is made at once.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "push/server_int.h"

typedef struct gather gather;

typedef struct gather_slot {
  gather *g;
  push_server *ps; /* the loop to copy: read on its own thread only */
  push_server copy;
  push_buf out; /* push_node_collect */
} gather_slot;

struct gather {
  push_server *asker;
  herald_http *h;
  void (*answer)(push_server *ps, const push_server *view, herald_http *h);
  /* push_node_each instead: run on every loop, summed. */
  push_node_fn each;
  const void *arg;
  void (*done)(push_server *ps, herald_http *h, uint64_t sum, void *arg);
  _Atomic uint64_t sum;
  /* push_node_collect instead: each loop writes, the asker reads all. */
  void (*fill)(push_server *ps, push_buf *out);
  void (*collected)(push_server *ps, herald_http *h, push_buf *outs, int n);
  atomic_int left;
  int n;
  gather_slot slot[];
};

/* What this loop's hub and engine say, into ps->fig (own thread). */
void push_node_figures(push_server *ps) {
  push_engine *e = ps->engine;
  size_t subs = push_hub_nsubscriptions(ps->hub);
  size_t chans = push_hub_nchannels(ps->hub);
  /* The threads engine's relays are hub subscribers that are no client,
   * and its replicas are channels another loop owns: counted once, there. */
  ps->fig.subscriptions = subs - (e && e->relays <= subs ? e->relays : 0);
  ps->fig.channels = chans - (e && e->replicas <= chans ? e->replicas : 0);
  ps->fig.history_bytes = push_hub_history_bytes(ps->hub);
  ps->fig.history_evictions = push_hub_history_evictions(ps->hub);
  ps->fig.idem_evicted = e ? e->idem_evicted : 0;
  ps->fig.nclients = ps->nclients;
  push_engine_figures_get(e, &ps->fig.engine);
  herald_loop_io_stats_get(ps->loop, &ps->fig.io);
}

static void add_proxy(push_proxy_stats *to, const push_proxy_stats *from) {
  to->requests += from->requests;
  to->unavailable += from->unavailable;
  to->refused += from->refused;
  for (int i = 0; i <= PUSH_PROXY_LAT_BUCKETS; i++) {
    to->lat_bucket[i] += from->lat_bucket[i];
  }
  to->lat_sum += from->lat_sum;
}

/* Adds the counters of s to v (the view being summed). */
static void add_figures(push_server *v, const push_server *s) {
  uint64_t *const to[] = {&v->messages_in,
                          &v->messages_out,
                          &v->bytes_in,
                          &v->bytes_out,
                          &v->publications,
                          &v->drops,
                          &v->slow_disconnects,
                          &v->connects_total,
                          &v->auth_failures,
                          &v->engine_unavailable,
                          &v->limited_commands,
                          &v->limited_publishes,
                          &v->limited_subscribes,
                          &v->limited_connections,
                          &v->channel_limit_refusals,
                          &v->tokens_expired,
                          &v->lat_count,
                          &v->proxy_overloaded,
                          &v->refresh_pushes,
                          &v->refreshes,
                          &v->sub_expired,
                          &v->user_limit_refusals,
                          &v->idempotent_hits};
  const uint64_t *const from[] = {&s->messages_in,
                                  &s->messages_out,
                                  &s->bytes_in,
                                  &s->bytes_out,
                                  &s->publications,
                                  &s->drops,
                                  &s->slow_disconnects,
                                  &s->connects_total,
                                  &s->auth_failures,
                                  &s->engine_unavailable,
                                  &s->limited_commands,
                                  &s->limited_publishes,
                                  &s->limited_subscribes,
                                  &s->limited_connections,
                                  &s->channel_limit_refusals,
                                  &s->tokens_expired,
                                  &s->lat_count,
                                  &s->proxy_overloaded,
                                  &s->refresh_pushes,
                                  &s->refreshes,
                                  &s->sub_expired,
                                  &s->user_limit_refusals,
                                  &s->idempotent_hits};
  for (size_t i = 0; i < sizeof(to) / sizeof(to[0]); i++) {
    *to[i] += *from[i];
  }
  for (int i = 0; i <= PUSH_LAT_BUCKETS; i++) {
    v->lat_bucket[i] += s->lat_bucket[i];
  }
  v->lat_sum += s->lat_sum;
  for (int k = 0; k < PUSH_PROXY_KINDS; k++) {
    add_proxy(&v->proxy[k], &s->proxy[k]);
  }
  v->proxy_in_flight += s->proxy_in_flight;
  v->fig.subscriptions += s->fig.subscriptions;
  v->fig.channels += s->fig.channels;
  v->fig.history_bytes += s->fig.history_bytes;
  v->fig.history_evictions += s->fig.history_evictions;
  v->fig.io.recv_pool_bytes += s->fig.io.recv_pool_bytes;
  v->fig.io.recv_pool_waits += s->fig.io.recv_pool_waits;
  v->fig.io.recv_placed += s->fig.io.recv_placed;
  v->fig.idem_evicted += s->fig.idem_evicted;
  v->fig.nclients += s->fig.nclients;
  push_engine_figures_add(&v->fig.engine, &s->fig.engine);
}

/* On the asking loop, once every slot is filled. */
static void gather_done(void *arg) {
  gather *g = arg;
  if (g->fill != NULL) {
    push_buf *outs = malloc((size_t)g->n * sizeof(*outs));
    if (outs == NULL) {
      push_http_error(g->h, 503, PUSH_E_INTERNAL, "out of memory");
    } else {
      for (int i = 0; i < g->n; i++) {
        outs[i] = g->slot[i].out;
      }
      g->collected(g->asker, g->h, outs, g->n);
      free(outs);
    }
    for (int i = 0; i < g->n; i++) {
      push_buf_free(&g->slot[i].out);
    }
    free(g);
    return;
  }
  if (g->each != NULL) {
    g->done(g->asker, g->h, atomic_load(&g->sum), (void *)g->arg);
    free(g);
    return;
  }
  push_server *view = malloc(sizeof(*view));
  if (view == NULL) {
    push_http_error(g->h, 503, PUSH_E_INTERNAL, "out of memory");
  } else {
    push_node_figures(g->asker);
    *view = *g->asker;
    for (int i = 0; i < g->n; i++) {
      if (g->slot[i].ps != g->asker) {
        add_figures(view, &g->slot[i].copy);
      }
    }
    g->answer(g->asker, view, g->h);
    free(view);
  }
  free(g);
}

/* On loop slot->ps's thread: its figures into the slot. */
static void gather_copy(void *arg) {
  gather_slot *s = arg;
  gather *g = s->g;
  if (g->fill != NULL) {
    g->fill(s->ps, &s->out);
  } else if (g->each != NULL) {
    atomic_fetch_add(&g->sum, g->each(s->ps, g->arg));
  } else {
    push_node_figures(s->ps);
    s->copy = *s->ps;
  }
  if (atomic_fetch_sub(&g->left, 1) == 1 &&
      herald_loop_post(g->asker->loop, gather_done, g) != 0) {
    /* The asking loop is shutting down: its request is gone with it. */
    free(g);
  }
}

/* Posts gather_copy to every loop but the asker's. */
static void gather_start(gather *g, push_server *all, int n) {
  g->n = n;
  atomic_store(&g->left, n - 1);
  for (int i = 0; i < n; i++) {
    g->slot[i].g = g;
    g->slot[i].ps = &all[i];
  }
  for (int i = 0; i < n; i++) {
    if (&all[i] != g->asker &&
        herald_loop_post(all[i].loop, gather_copy, &g->slot[i]) != 0) {
      /* A loop that is shutting down answers nothing: count it as done
       * with zero figures. */
      if (atomic_fetch_sub(&g->left, 1) == 1) {
        gather_done(g);
        return;
      }
    }
  }
}

void push_node_each(push_server *ps, herald_http *h, push_node_fn each,
                    void *arg,
                    void (*done)(push_server *ps, herald_http *h, uint64_t sum,
                                 void *arg)) {
  push_server *all;
  int n = push_server_all(&all);
  uint64_t mine = each(ps, arg);
  gather *g =
      n > 1 ? calloc(1, sizeof(*g) + (size_t)n * sizeof(gather_slot)) : NULL;
  if (g == NULL) {
    done(ps, h, mine, arg); /* one loop (or out of memory: this one's) */
    return;
  }
  g->asker = ps;
  g->h = h;
  g->each = each;
  g->arg = arg;
  g->done = done;
  atomic_store(&g->sum, mine);
  gather_start(g, all, n);
}

void push_node_answer(push_server *ps, herald_http *h,
                      void (*answer)(push_server *ps, const push_server *view,
                                     herald_http *h)) {
  push_server *all;
  int n = push_server_all(&all);
  if (n <= 1) {
    push_node_figures(ps);
    answer(ps, ps, h);
    return;
  }
  gather *g = calloc(1, sizeof(*g) + (size_t)n * sizeof(gather_slot));
  if (g == NULL) {
    push_http_error(h, 503, PUSH_E_INTERNAL, "out of memory");
    return;
  }
  g->asker = ps;
  g->h = h;
  g->answer = answer;
  gather_start(g, all, n);
}

void push_node_collect(push_server *ps, herald_http *h,
                       void (*fill)(push_server *ps, push_buf *out),
                       void (*collected)(push_server *ps, herald_http *h,
                                         push_buf *outs, int n)) {
  push_server *all;
  int n = push_server_all(&all);
  push_buf one = {0};
  gather *g =
      n > 1 ? calloc(1, sizeof(*g) + (size_t)n * sizeof(gather_slot)) : NULL;
  if (g == NULL) {
    fill(ps, &one); /* one loop (or out of memory: this one's) */
    collected(ps, h, &one, 1);
    push_buf_free(&one);
    return;
  }
  g->asker = ps;
  g->h = h;
  g->fill = fill;
  g->collected = collected;
  for (int i = 0; i < n; i++) {
    if (&all[i] == ps) {
      fill(ps, &g->slot[i].out);
    }
  }
  gather_start(g, all, n);
}
