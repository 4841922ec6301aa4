/* engine.c - the engine interface's one choice (push_engine_new) and the
 * memory engine: a single node whose hub is the whole truth, so that every
 * call completes at once. */
#include "push/engine.h"

#include <stdlib.h>
#include <string.h>

#include "push/config.h"

static int mem_sync(push_engine *e, const char *channel, push_engine_cb cb,
                    void *ud) {
  (void)e, (void)channel, (void)cb, (void)ud;
  return PUSH_ENGINE_OK;
}

static void mem_release(push_engine *e, const char *channel) {
  (void)e, (void)channel;
}

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int mem_publish(push_engine *e, const char *channel,
                       const push_publication *p, push_pos *pos,
                       push_engine_cb cb, void *ud) {
  (void)cb, (void)ud;
  return push_hub_publish(e->hub, channel, p->data, p->b64, p->client, p->user,
                          wall_ms(), pos) == 0
             ? PUSH_ENGINE_OK
             : PUSH_ENGINE_ERROR;
}

/* The hub sends join and leave pushes itself, for new entries only, so a
 * refresh (announce 0) never reaches it: memory entries do not expire. */
static void mem_presence_add(push_engine *e, const char *channel,
                             const push_member *m, int announce) {
  (void)announce;
  push_hub_presence_add(e->hub, channel, m->client, m->user, m->info);
}

static void mem_presence_remove(push_engine *e, const char *channel,
                                const push_member *m) {
  push_hub_presence_remove(e->hub, channel, m->client);
}

static int mem_presence_get(push_engine *e, const char *channel, push_buf *out,
                            push_engine_cb cb, void *ud) {
  (void)cb, (void)ud;
  return push_hub_presence_json(e->hub, channel, out) == 0 ? PUSH_ENGINE_OK
                                                           : PUSH_ENGINE_ERROR;
}

static int mem_nodes(push_engine *e, push_buf *out, push_engine_cb cb,
                     void *ud) {
  (void)cb, (void)ud;
  if (push_buf_raw(out, "[", 1) != 0) {
    return PUSH_ENGINE_ERROR;
  }
  e->ev.node_json(e->ev.ud, out);
  return push_buf_raw(out, "]", 1) == 0 ? PUSH_ENGINE_OK : PUSH_ENGINE_ERROR;
}

static void mem_tick(push_engine *e, int64_t now_ms) {
  (void)e, (void)now_ms;
}

static int mem_healthy(const push_engine *e, const char **why) {
  (void)e;
  *why = NULL;
  return 1;
}

static int mem_metrics(const push_engine *e, push_buf *out) {
  (void)e, (void)out;
  return 0;
}

static void mem_shutdown(push_engine *e) {
  (void)e;
}

static void mem_del(push_engine *e) {
  free(e);
}

static const push_engine_vt memory_vt = {
    .name = "memory",
    .sync = mem_sync,
    .release = mem_release,
    .publish = mem_publish,
    .presence_add = mem_presence_add,
    .presence_remove = mem_presence_remove,
    .presence_get = mem_presence_get,
    .nodes = mem_nodes,
    .tick = mem_tick,
    .healthy = mem_healthy,
    .metrics = mem_metrics,
    .shutdown = mem_shutdown,
    .del = mem_del,
};

push_engine *push_engine_memory_new(push_hub *hub,
                                    const push_engine_events *ev) {
  push_engine *e = calloc(1, sizeof(*e));
  if (e == NULL) {
    return NULL;
  }
  e->vt = &memory_vt;
  e->hub = hub;
  e->ev = *ev;
  return e;
}

push_engine *push_engine_new(const push_config *cfg, uv_loop_t *loop,
                             push_hub *hub, const char *node,
                             const push_engine_events *ev, char *err,
                             size_t errlen) {
  if (cfg->engine_redis) {
    return push_engine_redis_new(&cfg->redis, loop, hub, node, ev, err, errlen);
  }
  push_engine *e = push_engine_memory_new(hub, ev);
  if (e == NULL) {
    snprintf(err, errlen, "out of memory");
  }
  return e;
}

void push_engine_del(push_engine *e) {
  if (e != NULL) {
    e->vt->del(e);
  }
}
