/* pusher_int.h - what the Pusher Channels files share (docs/pusher.md):
 * apps, connections ("sockets"), channels on this node and the replica of
 * a presence channel's members. Private to src/push/pusher*.c.
 *
 *   pusher.c         the WebSocket side: /app/{key}, every pusher:* event,
 *                    client events, signin, closing with Pusher's codes
 *   pusher_chan.c    channels on this node: the one hub subscriber per
 *                    channel, its sockets, delivery, presence, cache
 *   pusher_roster.c  who is in a presence channel (a replica fed by the
 *                    engine's snapshots and join/leave pushes), and a
 *                    small string map
 *   pusher_dir.c     each app's directory of occupied channels, across
 *                    the cluster (presence entries per node and channel)
 *   pusher_hook.c    webhooks, through the shared sender (webhook.h)
 *   pusher_proto.c   wire formats and signatures, as pure functions
 *   pusher_api.c     the HTTP API (/apps/{id}/...) and its request signing
 *
 * How a Pusher channel maps onto the hub: each (app, channel) is one hub
 * channel in a namespace of the app's (pusher_config.h), and this node's
 * sockets on it share one hub subscription (a pusher_chan): the hub hands
 * each publication once to the pusher_chan, which sends the event to its
 * sockets. A publication's data is ["<socket id to skip>", <event>], where
 * <event> is the Pusher message exactly as sockets receive it: the frame is
 * encoded once, by whoever published, and every socket's queue references
 * the hub's copy. Everything goes through the engine (engine.h), so it
 * works the same on one node and on several over Redis.
 */
#ifndef HERALD_PUSH_PUSHER_INT_H
#define HERALD_PUSH_PUSHER_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "push/server_int.h"
#include "push/webhook.h"

#define PUSHER_CHANNEL_MAX 164 /* Pusher's limit, prefixes included */
#define PUSHER_EVENT_MAX 200
#define PUSHER_USER_ID_MAX 128
#define PUSHER_MAX_CHANNELS_PER_EVENT 100
#define PUSHER_MAX_BATCH 10
#define PUSHER_HUB_MAX (PUSH_CHANNEL_MAX + 1)
/* Pusher's timestamp window for signed API requests, seconds. */
#define PUSHER_API_WINDOW_S 600

/* Close codes and pusher:error codes (Pusher protocol 7). */
enum {
  PUSHER_E_APP_UNKNOWN = 4001,
  PUSHER_E_APP_DISABLED = 4003,
  PUSHER_E_OVER_QUOTA = 4004,
  PUSHER_E_PATH = 4005,
  PUSHER_E_VERSION_FORMAT = 4006,
  PUSHER_E_PROTOCOL = 4007,
  PUSHER_E_NO_PROTOCOL = 4008,
  PUSHER_E_UNAUTHORIZED = 4009,
  PUSHER_E_OVER_CAPACITY = 4100,
  PUSHER_E_RECONNECT = 4200,
  PUSHER_E_PONG = 4201,
  PUSHER_E_CLIENT_EVENT = 4301,
  PUSHER_E_SERVER = 4302
};

/* ---- a string map (pusher_roster.c) ---------------------------------- */

/* Open addressing over keys the map owns (copied), values the caller's.
 * Keys come from peers, so they are hashed with SipHash under a random
 * key. */
typedef struct pusher_map {
  struct pusher_map_slot *slots;
  size_t cap, n;
} pusher_map;

void *pusher_map_get(const pusher_map *m, const char *key);
/* Sets key's value (replacing it). Returns 0 or -1 (out of memory). */
int pusher_map_put(pusher_map *m, const char *key, void *value);
/* Removes key; returns its value, or NULL. */
void *pusher_map_del(pusher_map *m, const char *key);
/* Walks the map: *pos starts at 0; returns 1 with the next key/value. The
 * map must not change during a walk. */
int pusher_map_next(const pusher_map *m, size_t *pos, const char **key,
                    void **value);
void pusher_map_free(pusher_map *m);

/* ---- a presence channel's members (pusher_roster.c) ------------------ */

/* The members of a presence channel as this node knows them: every entry
 * (one per connection, cluster-wide) and, from them, every user with how
 * many connections it has. It follows the engine's join and leave pushes
 * as they come; a snapshot (the engine's presence read) replaces it, and
 * the pushes that arrived while the snapshot was on its way are applied
 * again on top of it, so the result is exact whatever the order in which
 * the two arrived (docs/pusher.md, "Presence across nodes"). */
typedef struct pusher_roster {
  pusher_map entries; /* client id -> struct roster_entry */
  pusher_map users;   /* user id -> struct roster_user */
  struct roster_log *log;
  size_t nlog, caplog;
  uint64_t seq;     /* pushes seen */
  uint64_t logbase; /* seq of log[0] */
  uint32_t inflight;
  int ready; /* a snapshot was applied */
} pusher_roster;

/* What one change did to a user. */
typedef struct pusher_change {
  int added; /* 1: member_added, 0: member_removed */
  const char *user;
  const char *info;   /* raw JSON or NULL (added only) */
  const char *client; /* the entry whose push made the change, or NULL (a
                         snapshot) */
} pusher_change;

typedef void (*pusher_change_fn)(const pusher_change *ch, void *ud);

/* Applies one join (leave 0) or leave push. fn (may be NULL) hears when a
 * user appears or disappears. Returns 0 or -1 (out of memory: the roster
 * may miss the change until the next snapshot). */
int pusher_roster_event(pusher_roster *r, int leave, const char *client,
                        const char *user, const char *info, pusher_change_fn fn,
                        void *ud);
/* A snapshot is about to be asked for: returns its token. */
uint64_t pusher_roster_begin(pusher_roster *r);
/* The snapshot asked for with token arrived: json is the engine's
 * {"clients":{...}}, or NULL when the read failed. fn hears every user
 * that differs from what the roster held. Returns 0 or -1. */
int pusher_roster_end(pusher_roster *r, uint64_t token, const char *json,
                      size_t len, pusher_change_fn fn, void *ud);
size_t pusher_roster_nusers(const pusher_roster *r);
int pusher_roster_has_user(const pusher_roster *r, const char *user);
/* {"presence":{"ids":[...],"hash":{...},"count":n}}, with the user me
 * (info my_info) added when the roster does not hold it yet (me may be
 * NULL). */
int pusher_roster_json(const pusher_roster *r, push_buf *b, const char *me,
                       const char *my_info);
void pusher_roster_free(pusher_roster *r);

/* Distinct users of an engine presence snapshot ({"clients":{...}}), as
 * {"users":[{"id":...},...]} (users 1) or their count (*count). Returns 0
 * or -1. */
int pusher_presence_users(const char *json, size_t len, push_buf *users,
                          size_t *count);

/* ---- what a node's loops share (pusher.c) ------------------------------ */

/* One loop's counts of one app, for /metrics: written by that loop only
 * (PUSHER_COUNT), summed by whichever loop renders /metrics. */
typedef struct pusher_counts {
  _Atomic uint64_t connects, refused, api_events, client_events;
  _Atomic uint64_t client_events_refused, subscriptions_refused;
  _Atomic uint64_t signin_timeouts, webhooks, channels;
  /* the loop's webhook sender, as of its last tick */
  _Atomic uint64_t hook_sent, hook_dropped, hook_failed;
} pusher_counts;

/* The Pusher state of a node with one or several loops (--threads): made
 * before the loops start (push_pusher_node_new), freed after they end. */
struct pusher_node {
  size_t napps;
  int nthreads;
  char sid_prefix[16];     /* socket ids: "<prefix>.<client number>" */
  _Atomic uint64_t *conns; /* per app: its connections on this node */
  pusher_counts *counts;   /* [thread * napps + app] */
};

/* One more of counter f of app on this loop. Its loop is the only writer,
 * so a relaxed load and store do (no locked instruction); readers see
 * whole values. */
#define PUSHER_COUNT(app, f)                                                   \
  atomic_store_explicit(                                                       \
      &(app)->cnt->f,                                                          \
      atomic_load_explicit(&(app)->cnt->f, memory_order_relaxed) + 1,          \
      memory_order_relaxed)

/* 1 when client (a push_client id, "<node>-<n>") is one of this loop's:
 * the one loop of the node that announces what that client changed. */
int pusher_client_here(const push_server *ps, const char *client);

/* ---- apps, sockets, channels ----------------------------------------- */

typedef struct pusher_app pusher_app;
typedef struct pusher_sock pusher_sock;
typedef struct pusher_chan pusher_chan;
typedef struct pusher_subn pusher_subn;

/* Kinds of channel, from the name's prefix. */
enum {
  PUSHER_K_PRIVATE = 1 << 0,   /* private-, private-encrypted-, presence- */
  PUSHER_K_PRESENCE = 1 << 1,  /* presence- */
  PUSHER_K_ENCRYPTED = 1 << 2, /* private-encrypted- */
  PUSHER_K_CACHE = 1 << 3,     /* cache-, private-cache-, presence-cache-,
                                  private-encrypted-cache- */
  PUSHER_K_USER = 1 << 4       /* #server-to-user-<id> */
};

/* What the upgrade decided, kept on the herald_ws until on_open: the app,
 * or the error to close with. */
typedef struct pusher_verdict {
  pusher_app *app; /* NULL: refused with code */
  int code;
  const char *message;
} pusher_verdict;

struct pusher_app {
  const push_pusher_app *cfg;
  push_server *ps;
  pusher_verdict ok;       /* {this, 0}: the verdict for this app's sockets */
  pusher_map chans;        /* Pusher name -> pusher_chan */
  _Atomic uint64_t *conns; /* connections on this node (all its loops) */
  pusher_counts *cnt;      /* this loop's counts (/metrics) */
  /* The directory of occupied channels (pusher_dir.c): one presence
   * entry "<loop id>/<channel>" per loop and channel (pusher_state's
   * loop_id), whose user is the channel and info {"n": subscriptions on
   * that loop}. */
  char dirhub[PUSHER_APP_ID_MAX + 24];
  int dir_state; /* 0 not following yet, 2 followed, first read in
                    flight, 1 live, -1 stopped */
  int dir_calls; /* engine calls in flight for it */
  int64_t dir_snapshot_ms;
  pusher_roster dir;
  uint64_t cluster_conns; /* other nodes' connections, as of the last tick */
  push_webhook *hook;     /* NULL: no webhooks */
};

/* One subscription of a socket to a channel. */
enum { SUBN_PENDING, SUBN_ON, SUBN_INTERNAL };

struct pusher_subn {
  pusher_sock *s;
  pusher_chan *ch;
  int state;
  size_t at;         /* index in ch->subs */
  char *user;        /* presence: the member's user id */
  char *info;        /* presence: its user_info (raw JSON) or NULL */
  int cache_current; /* cache channels: the hub's copy was made current for
                        this subscription (its last event is the latest) */
};

struct pusher_sock {
  push_client *c;
  pusher_app *app;
  char socket_id[32];
  char *user;      /* signed in: user_data's id */
  char *user_info; /* signed in: user_data's user_info, raw JSON, or NULL */
  pusher_subn **subs;
  size_t nsubs, capsubs;
  push_bucket rl_events; /* client events */
  int64_t opened_ms;     /* when connection_established went out */
};

/* Channel states: waiting for the engine, following it. */
enum { PCH_SYNCING, PCH_LIVE };

struct pusher_chan {
  pusher_app *app;
  unsigned kind;
  int state;
  char hub[PUSHER_HUB_MAX];
  char name[PUSHER_CHANNEL_MAX + 1 + 32]; /* user channels: 16 + id */
  pusher_subn **subs;
  size_t nsubs, capsubs;
  size_t non;        /* subscriptions that are on */
  int64_t linger_ms; /* no subscriptions left: freed at this time (0: not) */
  struct pusher_call *calls; /* engine calls in flight for it */
  pusher_roster roster;      /* presence channels */
};

/* The server's Pusher side (ps->pusher). */
typedef struct pusher_state {
  pusher_app *apps;
  size_t napps;
  struct pusher_node *node; /* shared by the node's loops */
  /* This loop's name in the directories: the node's, or "<node>.<loop>"
   * with several loops (node names have no '.'). */
  char loop_id[32];
  int64_t last_refresh;   /* presence entries refreshed then */
  push_http_client *http; /* for webhooks; NULL when no app has them */
  pusher_verdict refuse[8];
} pusher_state;

/* ---- pusher.c -------------------------------------------------------- */

/* The node's figure of app i: the field at offset off of pusher_counts,
 * summed over the node's loops. */
uint64_t pusher_node_sum(const pusher_state *st, size_t i, size_t off);

pusher_app *pusher_app_by_id(push_server *ps, const char *id);
/* Sends text to a socket; a socket over its cap is closed (4100). */
void pusher_send(pusher_sock *s, const char *p, size_t n);
/* {"event":"pusher:error","data":{"code":C,"message":M}} (code 0: null),
 * then, when close is set, the close frame with code. */
void pusher_error(pusher_sock *s, int code, const char *message, int close);
/* pusher:subscription_error on channel, {"type","error","status"}. */
void pusher_subscription_error(pusher_sock *s, const char *channel,
                               const char *type, const char *error, int status);
/* The Pusher socket of a client (NULL for herald's own clients). */
pusher_sock *pusher_sock_of(push_client *c);

/* ---- pusher_chan.c --------------------------------------------------- */

/* The channel kind of a name, or -1 when the name is not a valid Pusher
 * channel name (user channels included). */
int pusher_channel_kind(const char *name, size_t n);
/* The hub channel of a Pusher channel of app. Returns 0 or -1 (too long). */
int pusher_hub_name(const pusher_app *app, const char *name, unsigned kind,
                    char out[PUSHER_HUB_MAX]);
/* Subscribes s to name (already checked and authorized). user/info:
 * presence member (copied) or NULL. internal: a user channel joined by
 * signin (events are not delivered until the client subscribes). */
void pusher_chan_subscribe(pusher_sock *s, const char *name, unsigned kind,
                           const char *user, const char *info, int internal);
/* The socket's subscription to name, or NULL. */
pusher_subn *pusher_sock_find(pusher_sock *s, const char *name);
void pusher_chan_unsubscribe(pusher_subn *sn);
pusher_chan *pusher_chan_find(pusher_app *app, const char *name);
/* Publishes an event (a Pusher message, JSON) to the hub channel: data
 * ["<skip>",event]. skip: a socket id or "" (or "!t" to terminate the
 * sockets of a user channel, len then 0). Returns as push_engine_publish;
 * on PUSH_ENGINE_PENDING on_done(ud) gets the outcome (on_done NULL: ud
 * must be NULL or the server, whose publications are counted). */
int pusher_publish(push_server *ps, const char *hub, const char *skip,
                   const char *event, size_t len, push_engine_cb on_done,
                   void *ud);
/* Refreshes presence entries (engine TTLs): call every
 * presence_refresh_ms. */
void pusher_chan_refresh(pusher_app *app);
/* A presence channel outlives its last subscription by this long, so that
 * its last member's leave comes back to this node (member_removed). */
#define PUSHER_LINGER_MS 5000
/* Once a second: frees the channels whose time has come. */
void pusher_chan_tick(pusher_app *app, int64_t now_ms);
/* At the end: every channel goes. */
void pusher_chan_free_all(pusher_app *app);

/* ---- pusher_dir.c ---------------------------------------------------- */

/* Starts following the app's directory (at start, and again after a
 * failure); pusher_dir_stop forgets it. */
void pusher_dir_start(pusher_app *app);
/* Once a second: starts again after a failure, reads the whole directory
 * every 30 s. */
void pusher_dir_tick(pusher_app *app, int64_t now_ms);
void pusher_dir_stop(pusher_app *app);
/* ch's count of subscriptions on this node changed: its entry follows. */
void pusher_dir_update(pusher_chan *ch);
/* Refreshes ch's entry (engine TTLs). */
void pusher_dir_refresh(pusher_chan *ch);
/* Reads a directory snapshot into name -> subscriptions (the map's values
 * are counts cast to pointers). Returns 0 or -1. */
int pusher_dir_counts(const char *json, size_t len, pusher_map *counts);

/* ---- pusher_proto.c -------------------------------------------------- */

/* A join or leave push of the engine ({"push":{"channel",
 * "join"|"leave":{"client","user","info"?}}}), read. */
typedef struct pusher_join {
  int leave;
  char client[PUSHER_HUB_MAX];
  char user[PUSHER_HUB_MAX];
  char *info; /* malloc'd raw JSON, or NULL: free it */
} pusher_join;
int pusher_parse_join(const char *frame, size_t len, pusher_join *j);

/* HMAC-SHA256 of p[0..n) under key as lowercase hex. Returns 0 or -1. */
int pusher_hmac_hex(const char *key, const char *p, size_t n, char out[65]);
/* MD5 of p[0..n) as lowercase hex. Returns 0 or -1. */
int pusher_md5_hex(const char *p, size_t n, char out[33]);
/* Compares a to b[0..bn) in time independent of the bytes. */
int pusher_hex_equal(const char *a, const char *b, size_t bn);
/* Checks "key:signature" against HMAC-SHA256(secret, text): 1 when it
 * holds. */
int pusher_auth_ok(const push_pusher_app *app, const char *auth, size_t alen,
                   const char *text, size_t tlen);
/* A socket id ("123.456"). */
int pusher_socket_id_valid(const char *s, size_t n);
/* Finds the event of a publication made by pusher_publish: *skip and
 * *skiplen get the socket id to skip ("!t": terminate, with no event to
 * send). Returns the event's bytes and sets *len, or NULL (not a Pusher
 * publication). */
const char *pusher_pub_event(const push_pub *pub, const char **skip,
                             size_t *skiplen, size_t *len);
/* Appends {"event":E,"channel":C,"data":"<text>"} with data a JSON text
 * that is escaped into a string (data_is_text 1) or raw JSON (0). */
int pusher_put_event(push_buf *b, const char *event, const char *channel,
                     const char *data, size_t dlen, int raw);
/* Decoded length of a JSON string value (the bytes it stands for). */
size_t pusher_json_str_len(push_json v);

/* ---- pusher_hook.c --------------------------------------------------- */

/* Starts the webhook senders of the apps that have a url. Returns 0 or -1
 * (logged). */
int pusher_hooks_start(push_server *ps, uv_loop_t *uv);
/* Deletes them (what they still hold is lost, counted as dropped). */
void pusher_hooks_stop(push_server *ps);
void pusher_hooks_metrics(push_server *ps, push_buf *out);
/* Copies this loop's webhook figures where the other loops read them
 * (/metrics): once a second, and before rendering /metrics. */
void pusher_hooks_tick(push_server *ps);

/* Webhooks of the app (when it has a webhook url and the event type):
 * channel_occupied (occupied 1) or channel_vacated. */
void pusher_hook_channel(pusher_app *app, int occupied, const char *channel);
/* member_added or member_removed of a presence channel. */
void pusher_hook_member(pusher_app *app, int added, const char *channel,
                        const char *user);
/* client_event: data is raw JSON, user may be NULL. */
void pusher_hook_client_event(pusher_app *app, const char *channel,
                              const char *event, const char *data, size_t dlen,
                              const char *socket_id, const char *user);
void pusher_hook_cache_miss(pusher_app *app, const char *channel);

/* ---- pusher_api.c ---------------------------------------------------- */

/* Answers a request under /apps/ (http.c routes it here). */
void pusher_api(push_server *ps, herald_http *h, const herald_request *req,
                const uint8_t *body, size_t len);

#endif
