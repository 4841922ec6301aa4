/* pusher_config.h - the "pusher" key of the configuration (docs/pusher.md,
 * docs/config.md): the Pusher Channels apps `herald serve` hosts, each with
 * its id, key and secret, its options and its limits.
 *
 * Pusher channels live in the hub like herald's own, in namespaces of
 * their own whose names no herald client can spell (a ';' is not allowed
 * in herald channel names): "pusher;<app id>" for public and private
 * channels, ";c" cache, ";p" presence, ";pc" presence-cache, ";u" users
 * (#server-to-user-<id>) and ";d" the directory of occupied channels.
 * push_pusher_namespaces() adds them to the configuration's namespaces.
 */
#ifndef HERALD_PUSH_PUSHER_CONFIG_H
#define HERALD_PUSH_PUSHER_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "push/push.h"

#define PUSHER_APP_ID_MAX 32
#define PUSHER_KEY_MAX 64
#define PUSHER_SECRET_MAX 128
#define PUSHER_MAX_APPS 64

/* The Pusher webhook event types (a bit each in push_pusher_app.hooks). */
enum {
  PUSHER_HOOK_CHANNEL_OCCUPIED = 1 << 0,
  PUSHER_HOOK_CHANNEL_VACATED = 1 << 1,
  PUSHER_HOOK_MEMBER_ADDED = 1 << 2,
  PUSHER_HOOK_MEMBER_REMOVED = 1 << 3,
  PUSHER_HOOK_CLIENT_EVENT = 1 << 4,
  PUSHER_HOOK_CACHE_MISS = 1 << 5,
  PUSHER_HOOK_ALL = (1 << 6) - 1
};

typedef struct push_pusher_app {
  char id[PUSHER_APP_ID_MAX + 1]; /* letters, digits, '-', '_' */
  char key[PUSHER_KEY_MAX + 1];
  char secret[PUSHER_SECRET_MAX + 1];
  int client_messages;           /* enable_client_messages: client-* events */
  uint32_t max_connections;      /* 0: no limit (4004 past it) */
  uint32_t activity_timeout;     /* s, told to clients (pusher-js pings) */
  size_t max_event_bytes;        /* an event's data (API 413, client 4301) */
  uint32_t max_presence_members; /* users in one presence channel */
  size_t max_user_info_bytes;    /* user_info of a presence member */
  uint32_t client_events_per_s;  /* client-* events per connection */
  uint32_t max_channels;         /* channels one connection subscribes */
  uint32_t user_auth_timeout;    /* s to sign in, else 4009 (0: not needed) */
  char *webhook_url;             /* NULL: no webhooks */
  unsigned hooks;                /* PUSHER_HOOK_* sent to webhook_url */
} push_pusher_app;

typedef struct push_pusher_config {
  push_pusher_app *apps;
  size_t napps;
} push_pusher_config;

/* Reads the "pusher" object ({"apps": [...]}) over pc. Returns 0, or -1
 * with a message in err (an unknown key, a bad value, an id or key used
 * twice, a secret left as a placeholder). */
int push_pusher_config_load(push_pusher_config *pc, push_json v, char *err,
                            size_t errlen);

/* Appends the namespaces of every app to *ns (realloc'd). Returns 0 or -1
 * (out of memory: *ns and *nns unchanged). */
int push_pusher_namespaces(const push_pusher_config *pc, push_ns **ns,
                           size_t *nns);

void push_pusher_config_free(push_pusher_config *pc);

#endif
