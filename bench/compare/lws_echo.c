/* lws_echo.c - an echo server on libwebsockets (Debian's libwebsockets-dev)
 * for bench/compare: every text or binary message goes back unchanged.
 *
 * The usual libwebsockets pattern: LWS_CALLBACK_RECEIVE assembles a message
 * from its fragments into a buffer with LWS_PRE bytes of headroom and
 * queues it; LWS_CALLBACK_SERVER_WRITEABLE sends one queued message per
 * call (lws_write) and asks for another writeable callback while more are
 * queued. One thread, the default event loop (poll), no extensions.
 *
 * usage: lws_echo PORT   (prints "listening on 127.0.0.1:PORT") */
#include <libwebsockets.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct msg {
  struct msg *next;
  size_t len;
  int binary;
  unsigned char buf[]; /* LWS_PRE + len */
};

struct session {
  struct msg *head, *tail; /* queued for sending */
  unsigned char *rx;       /* message being assembled: LWS_PRE + rxlen */
  size_t rxlen, rxcap;
};

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
  (void)sig;
  stop = 1;
}

static int rx_append(struct session *s, const void *in, size_t len) {
  if (LWS_PRE + s->rxlen + len > s->rxcap) {
    size_t cap = s->rxcap ? s->rxcap : 4096;
    while (cap < LWS_PRE + s->rxlen + len) {
      cap *= 2;
    }
    unsigned char *p = realloc(s->rx, cap);
    if (p == NULL) {
      return -1;
    }
    s->rx = p;
    s->rxcap = cap;
  }
  memcpy(s->rx + LWS_PRE + s->rxlen, in, len);
  s->rxlen += len;
  return 0;
}

static int callback_echo(struct lws *wsi, enum lws_callback_reasons reason,
                         void *user, void *in, size_t len) {
  struct session *s = user;
  switch (reason) {
  case LWS_CALLBACK_ESTABLISHED:
    memset(s, 0, sizeof(*s));
    break;
  case LWS_CALLBACK_RECEIVE: {
    if (rx_append(s, in, len) != 0) {
      return -1;
    }
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi)) {
      break;
    }
    struct msg *m = malloc(sizeof(*m) + LWS_PRE + s->rxlen);
    if (m == NULL) {
      return -1;
    }
    m->next = NULL;
    m->len = s->rxlen;
    m->binary = lws_frame_is_binary(wsi);
    memcpy(m->buf + LWS_PRE, s->rx + LWS_PRE, s->rxlen);
    s->rxlen = 0;
    if (s->tail) {
      s->tail->next = m;
    } else {
      s->head = m;
    }
    s->tail = m;
    lws_callback_on_writable(wsi);
    break;
  }
  case LWS_CALLBACK_SERVER_WRITEABLE: {
    struct msg *m = s->head;
    if (m == NULL) {
      break;
    }
    int n = lws_write(wsi, m->buf + LWS_PRE, m->len,
                      m->binary ? LWS_WRITE_BINARY : LWS_WRITE_TEXT);
    if (n < (int)m->len) {
      return -1;
    }
    s->head = m->next;
    if (s->head == NULL) {
      s->tail = NULL;
    }
    free(m);
    if (s->head) {
      lws_callback_on_writable(wsi);
    }
    break;
  }
  case LWS_CALLBACK_CLOSED:
    while (s->head) {
      struct msg *m = s->head;
      s->head = m->next;
      free(m);
    }
    s->tail = NULL;
    free(s->rx);
    s->rx = NULL;
    break;
  default:
    break;
  }
  return 0;
}

static struct lws_protocols protocols[] = {
    {"echo", callback_echo, sizeof(struct session), 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0}};

int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 9003;
  signal(SIGINT, on_signal);
  signal(SIGTERM, on_signal);
  lws_set_log_level(LLL_ERR, NULL);
  struct lws_context_creation_info info;
  memset(&info, 0, sizeof(info));
  info.port = port;
  info.iface = "127.0.0.1";
  info.protocols = protocols;
  info.options = LWS_SERVER_OPTION_DISABLE_IPV6;
  info.pt_serv_buf_size = 256 * 1024;
  info.fd_limit_per_thread = 0;
  struct lws_context *ctx = lws_create_context(&info);
  if (ctx == NULL) {
    fprintf(stderr, "lws_echo: cannot create the context\n");
    return 1;
  }
  printf("listening on 127.0.0.1:%d\n", port);
  fflush(stdout);
  while (!stop && lws_service(ctx, 0) >= 0) {
  }
  lws_context_destroy(ctx);
  return 0;
}
