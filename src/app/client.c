/* client.c - `herald client`: an interactive WebSocket client. Lines read
 * from stdin become messages, received messages go to stdout, and the exit
 * code says how the connection ended. With --echo it is an echo robot that
 * a conformance runner can drive (Autobahn's client mode). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>
#include <uv.h>

#include "app/cli.h"
#include "herald/rt.h"

/* Exit codes, as documented in client_usage(). */
enum {
  EXIT_NORMAL = 0,   /* closed with 1000, 1001 or 1005 */
  EXIT_CONNECT = 1,  /* could not connect, or the handshake was refused */
  EXIT_USAGE = 2,    /* bad command line */
  EXIT_LOST = 3,     /* connection lost without a close handshake (1006) */
  EXIT_CLOSE_ERR = 4 /* the peer closed with another code */
};

#define STDIN_CHUNK (64 * 1024)

enum stdin_kind { IN_NONE, IN_STREAM, IN_FILE };

struct client {
  herald_loop *loop;
  herald_ws *ws; /* NULL once on_close has run */
  herald_opcode send_op;
  int echo;
  int quiet;
  int opened;
  int exit_code;
  int stdout_broken;

  /* stdin: a stream handle (pipe, tty, socket) or, for regular files and
   * character devices that libuv cannot poll, a chain of uv_fs_read. */
  enum stdin_kind in_kind;
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_pipe_t pipe;
    uv_tty_t tty;
    uv_tcp_t tcp;
  } in;
  int in_open;    /* the handle is not closed yet */
  int in_paused;  /* backpressure: wait for on_drain */
  int in_eof;     /* stdin is finished */
  int fs_busy;    /* a uv_fs_read is in flight */
  uv_fs_t fs_req; /* IN_FILE */
  char *rbuf;     /* STDIN_CHUNK bytes for reads */
  char *line;     /* the partial line carried between reads */
  size_t linelen, linecap;

  uv_signal_t sigint, sigterm;
  int signals_open; /* signal handles not closed yet */
};

static void client_usage(FILE *out) {
  fprintf(out,
          "usage: herald client URL [options]\n"
          "\n"
          "An interactive WebSocket client. Each line read from stdin is sent "
          "as one\nmessage (without its newline); each message received is "
          "written to stdout\nfollowed by a newline (binary messages as raw "
          "bytes). At the end of stdin\nthe client closes with 1000 and waits "
          "for the close handshake.\n"
          "\n"
          "  -H, --header 'Name: value'  extra request header (repeatable)\n"
          "  --subprotocol P       offer subprotocol P (repeatable, in order)\n"
          "  --origin O            send Origin: O\n"
          "  --binary              send stdin lines as binary messages\n"
          "  --ping-interval SECS  send a ping every SECS seconds; no pong "
          "within\n"
          "                        SECS seconds drops the connection\n"
          "  --connect-timeout SECS  DNS + TCP + handshake (default 10)\n"
          "  --max-message SIZE    largest message accepted (default 64M)\n"
          "  --echo                do not read stdin: send every message "
          "back\n"
          "                        unchanged (text as text, binary as "
          "binary);\n"
          "                        nothing is printed\n"
          "  --quiet               do not print received messages\n"
          "  --deflate             offer permessage-deflate (RFC 7692)\n"
          "  --ca FILE             wss://: trust the CA certificates in FILE "
          "(PEM)\n"
          "                        instead of the system store\n"
          "  --server-name NAME    wss://: verify and send SNI for NAME "
          "instead of\n"
          "                        the URL's host\n"
          "  --insecure            wss://: do not verify the server's "
          "certificate\n"
          "  --help                this text\n"
          "\n"
          "URL is ws://host[:port]/path?query. SIGINT or SIGTERM closes with "
          "1001\n(a second one kills the client).\n"
          "\n"
          "exit codes:\n"
          "  0  the connection closed normally: 1000, 1001 or 1005 after a "
          "close\n     handshake\n"
          "  1  could not connect, or the handshake was refused\n"
          "  2  usage error\n"
          "  3  the connection was lost without a close handshake (1006)\n"
          "  4  the peer closed with another code (printed on stderr)\n");
}

/* ---- stdout ------------------------------------------------------------- */

/* Writes all of iov to fd 1. stdout may share a non-blocking file
 * description with stdin (a terminal, a socket), so EAGAIN waits in poll()
 * rather than losing output. Returns 0 or -1 (errno set). */
static int write_all(struct iovec *iov, int cnt) {
  while (cnt > 0) {
    ssize_t n = writev(STDOUT_FILENO, iov, cnt);
    if (n < 0) {
      if (errno == EINTR) {
        continue;
      }
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        struct pollfd p = {.fd = STDOUT_FILENO, .events = POLLOUT};
        (void)poll(&p, 1, -1);
        continue;
      }
      return -1;
    }
    size_t left = (size_t)n;
    while (cnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      iov++;
      cnt--;
    }
    if (cnt > 0) {
      iov->iov_base = (char *)iov->iov_base + left;
      iov->iov_len -= left;
    }
  }
  return 0;
}

static void print_message(struct client *c, const uint8_t *data, size_t len) {
  if (c->quiet || c->echo || c->stdout_broken) {
    return;
  }
  struct iovec iov[2] = {{(void *)data, len}, {"\n", 1}};
  if (write_all(iov, 2) != 0) {
    /* Nobody reads our output any more: say goodbye like at stdin's end. */
    c->stdout_broken = 1;
    fprintf(stderr, "herald client: stdout: %s\n", strerror(errno));
    if (c->ws) {
      (void)herald_ws_close(c->ws, HERALD_CLOSE_NORMAL, "", 0);
    }
  }
}

/* ---- the end ------------------------------------------------------------ */

/* Stops the loop once the connection and every handle of ours are gone, so
 * that herald_loop_del() finds nothing of ours on the uv loop. */
static void maybe_finish(struct client *c) {
  if (c->ws == NULL && !c->in_open && !c->fs_busy && c->signals_open == 0) {
    herald_loop_stop(c->loop);
  }
}

static void on_in_closed(uv_handle_t *h) {
  struct client *c = h->data;
  c->in_open = 0;
  maybe_finish(c);
}

static void on_signal_closed(uv_handle_t *h) {
  struct client *c = h->data;
  c->signals_open--;
  maybe_finish(c);
}

static void stdin_stop(struct client *c) {
  c->in_eof = 1;
  if (c->in_kind == IN_STREAM && c->in_open && !uv_is_closing(&c->in.handle)) {
    uv_close(&c->in.handle, on_in_closed);
  }
}

static void close_signals(struct client *c) {
  if (c->signals_open == 2 && !uv_is_closing((uv_handle_t *)&c->sigint)) {
    uv_close((uv_handle_t *)&c->sigint, on_signal_closed);
    uv_close((uv_handle_t *)&c->sigterm, on_signal_closed);
  }
}

/* ---- stdin -------------------------------------------------------------- */

static void send_line(struct client *c, const char *data, size_t len) {
  if (c->ws == NULL) {
    return;
  }
  int rv = herald_ws_send(c->ws, c->send_op, data, len);
  if (rv == HERALD_SEND_BACKPRESSURE) {
    c->in_paused = 1;
    if (c->in_kind == IN_STREAM && c->in_open) {
      uv_read_stop(&c->in.stream);
    }
  } else if (rv == HERALD_SEND_DROPPED) {
    fprintf(stderr, "herald client: send buffer full, message dropped\n");
  } else if (rv < 0 && rv != HERALD_ERR_CLOSED) {
    fprintf(stderr, "herald client: send: %s\n", herald_rt_strerror(rv));
  }
}

static int line_append(struct client *c, const char *data, size_t len) {
  if (c->linelen + len > c->linecap) {
    size_t cap = c->linecap ? c->linecap : 256;
    while (cap < c->linelen + len) {
      cap *= 2;
    }
    char *p = realloc(c->line, cap);
    if (p == NULL) {
      return -1;
    }
    c->line = p;
    c->linecap = cap;
  }
  memcpy(c->line + c->linelen, data, len);
  c->linelen += len;
  return 0;
}

/* Splits input into lines; each complete line (without its newline) is
 * sent, the rest waits for the next read. Lines that arrive whole in one
 * read are sent straight from the read buffer. */
static void feed(struct client *c, const char *data, size_t len) {
  while (len > 0) {
    const char *nl = memchr(data, '\n', len);
    if (nl == NULL) {
      if (line_append(c, data, len) != 0) {
        fprintf(stderr, "herald client: out of memory\n");
        c->linelen = 0;
      }
      return;
    }
    size_t n = (size_t)(nl - data);
    if (c->linelen == 0) {
      send_line(c, data, n);
    } else if (line_append(c, data, n) == 0) {
      send_line(c, c->line, c->linelen);
      c->linelen = 0;
    } else {
      fprintf(stderr, "herald client: out of memory\n");
      c->linelen = 0;
    }
    data = nl + 1;
    len -= n + 1;
  }
}

/* The end of stdin: send what is left of the last line, then start the
 * close handshake. */
static void stdin_eof(struct client *c) {
  if (c->in_eof) {
    return;
  }
  if (c->linelen > 0) {
    send_line(c, c->line, c->linelen);
    c->linelen = 0;
  }
  stdin_stop(c);
  if (c->ws) {
    /* "" rather than NULL: the core memcpy()s the reason even when empty. */
    (void)herald_ws_close(c->ws, HERALD_CLOSE_NORMAL, "", 0);
  }
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct client *c = h->data;
  (void)suggested;
  *buf = uv_buf_init(c->rbuf, STDIN_CHUNK);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct client *c = s->data;
  if (nread > 0) {
    feed(c, buf->base, (size_t)nread);
  } else if (nread < 0) {
    if (nread != UV_EOF) {
      fprintf(stderr, "herald client: stdin: %s\n", uv_strerror((int)nread));
    }
    stdin_eof(c);
  }
}

static void fs_read_next(struct client *c);

static void on_fs_read(uv_fs_t *req) {
  struct client *c = req->data;
  ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  c->fs_busy = 0;
  if (c->ws == NULL) {
    c->in_eof = 1;
    maybe_finish(c);
    return;
  }
  if (n > 0) {
    feed(c, c->rbuf, (size_t)n);
    fs_read_next(c);
    return;
  }
  if (n < 0) {
    fprintf(stderr, "herald client: stdin: %s\n", uv_strerror((int)n));
  }
  stdin_eof(c);
}

static void fs_read_next(struct client *c) {
  if (c->fs_busy || c->in_paused || c->in_eof || c->ws == NULL) {
    return;
  }
  uv_buf_t b = uv_buf_init(c->rbuf, STDIN_CHUNK);
  c->fs_req.data = c;
  int rv = uv_fs_read(herald_loop_uv(c->loop), &c->fs_req, STDIN_FILENO, &b, 1,
                      -1, on_fs_read);
  if (rv != 0) {
    fprintf(stderr, "herald client: stdin: %s\n", uv_strerror(rv));
    stdin_eof(c);
    return;
  }
  c->fs_busy = 1;
}

/* Opens fd 0 the way libuv can read it. Returns 0, or -1 when stdin cannot
 * be read at all (closed), which counts as an immediate end of input. */
static int stdin_open(struct client *c) {
  uv_loop_t *uv = herald_loop_uv(c->loop);
  int rv;
  switch (uv_guess_handle(STDIN_FILENO)) {
  case UV_TTY:
    rv = uv_tty_init(uv, &c->in.tty, STDIN_FILENO, 1);
    break;
  case UV_NAMED_PIPE:
    rv = uv_pipe_init(uv, &c->in.pipe, 0);
    if (rv == 0) {
      c->in_open = 1;
      c->in.handle.data = c;
      c->in_kind = IN_STREAM;
      rv = uv_pipe_open(&c->in.pipe, STDIN_FILENO);
    }
    break;
  case UV_TCP:
    rv = uv_tcp_init(uv, &c->in.tcp);
    if (rv == 0) {
      c->in_open = 1;
      c->in.handle.data = c;
      c->in_kind = IN_STREAM;
      rv = uv_tcp_open(&c->in.tcp, STDIN_FILENO);
    }
    break;
  case UV_FILE:
    c->in_kind = IN_FILE;
    return 0;
  default:
    return -1;
  }
  if (c->in_kind == IN_NONE && rv == 0) {
    c->in_open = 1;
    c->in.handle.data = c;
    c->in_kind = IN_STREAM;
  }
  if (rv != 0) {
    fprintf(stderr, "herald client: stdin: %s\n", uv_strerror(rv));
    if (c->in_open) {
      uv_close(&c->in.handle, on_in_closed);
    }
    c->in_kind = IN_NONE;
    return -1;
  }
  return 0;
}

static void stdin_resume(struct client *c) {
  if (c->in_eof) {
    return;
  }
  c->in_paused = 0;
  if (c->in_kind == IN_FILE) {
    fs_read_next(c);
    return;
  }
  int rv = uv_read_start(&c->in.stream, on_alloc, on_read);
  if (rv != 0) {
    fprintf(stderr, "herald client: stdin: %s\n", uv_strerror(rv));
    stdin_eof(c);
  }
}

/* ---- signals ------------------------------------------------------------ */

/* The first SIGINT or SIGTERM asks the peer to close; the watchers then
 * stop, so a second signal kills the process the default way. */
static void on_signal(uv_signal_t *s, int signum) {
  struct client *c = s->data;
  close_signals(c);
  if (c->ws && c->opened) {
    stdin_stop(c);
    (void)herald_ws_close(c->ws, HERALD_CLOSE_GOING_AWAY, "", 0);
  } else {
    /* Still connecting: nothing to close politely. */
    signal(signum, SIG_DFL);
    raise(signum);
  }
}

/* ---- connection callbacks ---------------------------------------------- */

static void on_open(herald_ws *ws, void *ud) {
  struct client *c = ud;
  c->opened = 1;
  if (c->echo) {
    return;
  }
  if (stdin_open(c) != 0) {
    stdin_eof(c);
    return;
  }
  stdin_resume(c);
  (void)ws;
}

static void on_message(herald_ws *ws, herald_opcode op, uint8_t *data,
                       size_t len, void *ud) {
  struct client *c = ud;
  if (c->echo) {
    int rv = herald_ws_send(ws, op, data, len);
    if (rv < 0 && rv != HERALD_ERR_CLOSED) {
      fprintf(stderr, "herald client: send: %s\n", herald_rt_strerror(rv));
    }
    return;
  }
  print_message(c, data, len);
}

static void on_drain(herald_ws *ws, void *ud) {
  struct client *c = ud;
  (void)ws;
  if (c->in_paused) {
    stdin_resume(c);
  }
}

static void on_close(herald_ws *ws, const herald_close_info *info, void *ud) {
  struct client *c = ud;
  (void)ws;
  c->ws = NULL;
  if (!c->opened) {
    fprintf(stderr, "herald client: %s\n",
            info->error ? info->error : "could not connect");
    c->exit_code = EXIT_CONNECT;
  } else if (info->code == HERALD_CLOSE_ABNORMAL) {
    fprintf(stderr, "herald client: connection lost%s%s\n",
            info->error ? ": " : "", info->error ? info->error : "");
    c->exit_code = EXIT_LOST;
  } else if (info->code == HERALD_CLOSE_NORMAL ||
             info->code == HERALD_CLOSE_GOING_AWAY ||
             info->code == HERALD_CLOSE_NO_STATUS) {
    c->exit_code = EXIT_NORMAL;
  } else {
    fprintf(stderr, "herald client: closed with %u '%.*s'%s%s\n",
            (unsigned)info->code, (int)info->reasonlen, info->reason,
            info->error ? ": " : "", info->error ? info->error : "");
    c->exit_code = EXIT_CLOSE_ERR;
  }
  stdin_stop(c);
  close_signals(c);
  maybe_finish(c);
}

/* ---- command line ------------------------------------------------------- */

/* Parses seconds with up to three decimals ("2", "0.5") into ms. */
static int parse_seconds(const char *s, uint32_t *ms) {
  uint64_t whole = 0, frac = 0;
  const char *dot = strchr(s, '.');
  char buf[32];
  if (dot == NULL) {
    if (cli_parse_uint(s, 4000000, &whole) != 0) {
      return -1;
    }
    *ms = (uint32_t)(whole * 1000);
    return 0;
  }
  size_t wl = (size_t)(dot - s), fl = strlen(dot + 1);
  if (wl == 0 || wl >= sizeof(buf) || fl == 0 || fl > 3) {
    return -1;
  }
  memcpy(buf, s, wl);
  buf[wl] = 0;
  if (cli_parse_uint(buf, 4000000, &whole) != 0 ||
      cli_parse_uint(dot + 1, 999, &frac) != 0) {
    return -1;
  }
  for (size_t i = fl; i < 3; i++) {
    frac *= 10;
  }
  *ms = (uint32_t)(whole * 1000 + frac);
  return 0;
}

/* Splits "Name: value" into a header that borrows from arg. */
static int parse_header(const char *arg, herald_header *h) {
  const char *colon = strchr(arg, ':');
  if (colon == NULL || colon == arg) {
    return -1;
  }
  const char *v = colon + 1;
  while (*v == ' ' || *v == '\t') {
    v++;
  }
  size_t vlen = strlen(v);
  while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t')) {
    vlen--;
  }
  h->name = (herald_str){arg, (size_t)(colon - arg)};
  h->value = (herald_str){v, vlen};
  return 0;
}

struct client_options {
  const char *url;
  const char *origin;
  const char *ca_file;
  const char *server_name;
  const char **protocols;
  size_t nprotocols;
  herald_header *headers;
  size_t nheaders;
  uint32_t ping_ms;
  uint32_t connect_ms;
  uint64_t max_message;
  int binary, echo, quiet, deflate, insecure;
};

/* Returns -1 to go on, or the exit code (0 after --help, 2 on errors). */
static int parse_args(int argc, char **argv, struct client_options *o) {
  for (int i = 1; i < argc;) {
    const char *v;
    int r;
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      client_usage(stdout);
      return 0;
    }
    int *flag = strcmp(a, "--binary") == 0                          ? &o->binary
                : strcmp(a, "--echo") == 0                          ? &o->echo
                : strcmp(a, "--quiet") == 0 || strcmp(a, "-q") == 0 ? &o->quiet
                : strcmp(a, "--deflate") == 0  ? &o->deflate
                : strcmp(a, "--insecure") == 0 ? &o->insecure
                                               : NULL;
    if (flag) {
      *flag = 1;
      i++;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "-H", &v)) != 0 ||
        (r = cli_option(argc, argv, &i, "--header", &v)) != 0) {
      if (r < 0) {
        return EXIT_USAGE;
      }
      if (parse_header(v, &o->headers[o->nheaders]) != 0) {
        fprintf(stderr, "herald client: -H takes 'Name: value'\n");
        return EXIT_USAGE;
      }
      o->nheaders++;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--subprotocol", &v)) != 0) {
      if (r < 0) {
        return EXIT_USAGE;
      }
      o->protocols[o->nprotocols++] = v;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--ca", &v)) != 0) {
      if (r < 0) {
        return EXIT_USAGE;
      }
      o->ca_file = v;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--server-name", &v)) != 0) {
      if (r < 0) {
        return EXIT_USAGE;
      }
      o->server_name = v;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--origin", &v)) != 0) {
      if (r < 0) {
        return EXIT_USAGE;
      }
      o->origin = v;
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--ping-interval", &v)) != 0) {
      if (r < 0 || parse_seconds(v, &o->ping_ms) != 0) {
        fprintf(stderr, "herald client: --ping-interval takes seconds\n");
        return EXIT_USAGE;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--connect-timeout", &v)) != 0) {
      if (r < 0 || parse_seconds(v, &o->connect_ms) != 0) {
        fprintf(stderr, "herald client: --connect-timeout takes seconds\n");
        return EXIT_USAGE;
      }
      continue;
    }
    if ((r = cli_option(argc, argv, &i, "--max-message", &v)) != 0) {
      if (r < 0 || cli_parse_size(v, &o->max_message) != 0 ||
          o->max_message == 0) {
        fprintf(stderr, "herald client: --max-message takes a size (64M)\n");
        return EXIT_USAGE;
      }
      continue;
    }
    if (a[0] == '-' && a[1] != 0) {
      fprintf(stderr, "herald client: unknown option '%s'\n", a);
      client_usage(stderr);
      return EXIT_USAGE;
    }
    if (o->url != NULL) {
      fprintf(stderr, "herald client: more than one URL\n");
      return EXIT_USAGE;
    }
    o->url = a;
    i++;
  }
  if (o->url == NULL) {
    fprintf(stderr, "herald client: missing URL\n");
    client_usage(stderr);
    return EXIT_USAGE;
  }
  return -1;
}

static int client_run(const struct client_options *o) {
  herald_client_config cfg;
  herald_client_config_init(&cfg);
  cfg.url = o->url;
  cfg.origin = o->origin;
  cfg.tls_ca_file = o->ca_file;
  cfg.tls_server_name = o->server_name;
  cfg.tls_insecure = o->insecure;
  cfg.subprotocols = o->protocols;
  cfg.nsubprotocols = o->nprotocols;
  cfg.headers = o->headers;
  cfg.nheaders = o->nheaders;
  if (o->connect_ms) {
    cfg.connect_timeout_ms = o->connect_ms;
  }
  cfg.core.max_message_size = o->max_message;
  cfg.core.max_frame_size = o->max_message;
  cfg.core.max_fragments = 1u << 20;
  cfg.core.deflate.enabled = o->deflate;
  cfg.limits.ping_interval_ms = o->ping_ms;
  if (o->ping_ms) {
    cfg.limits.pong_timeout_ms = o->ping_ms;
  }
  /* An echoed message may sit in the send buffer whole. */
  cfg.limits.send_hard_cap = 2 * o->max_message + (1u << 20);
  if (o->echo) {
    cfg.limits.send_high_water = o->max_message;
  }

  struct client c = {0};
  c.send_op = o->binary ? HERALD_OP_BINARY : HERALD_OP_TEXT;
  c.echo = o->echo;
  c.quiet = o->quiet;
  c.exit_code = EXIT_CONNECT;
  c.rbuf = malloc(STDIN_CHUNK);
  if (c.rbuf == NULL) {
    fprintf(stderr, "herald client: out of memory\n");
    return EXIT_CONNECT;
  }
  int rv = herald_loop_new(&c.loop, NULL);
  if (rv != 0) {
    fprintf(stderr, "herald client: %s\n", herald_rt_strerror(rv));
    free(c.rbuf);
    return EXIT_CONNECT;
  }
  uv_loop_t *uv = herald_loop_uv(c.loop);
  uv_signal_init(uv, &c.sigint);
  uv_signal_init(uv, &c.sigterm);
  c.sigint.data = c.sigterm.data = &c;
  c.signals_open = 2;
  uv_signal_start(&c.sigint, on_signal, SIGINT);
  uv_signal_start(&c.sigterm, on_signal, SIGTERM);

  herald_ws_callbacks cb = {.on_open = on_open,
                            .on_message = on_message,
                            .on_drain = on_drain,
                            .on_close = on_close};
  rv = herald_connect(c.loop, &cfg, &cb, &c, &c.ws);
  if (rv != 0) {
    fprintf(stderr, "herald client: %s: %s\n", o->url, herald_rt_strerror(rv));
    c.ws = NULL;
    c.exit_code = rv == HERALD_ERR_INVALID_ARG ? EXIT_USAGE : EXIT_CONNECT;
    close_signals(&c);
  }
  herald_loop_run(c.loop);
  herald_loop_del(c.loop);
  free(c.rbuf);
  free(c.line);
  return c.exit_code;
}

int herald_cmd_client(int argc, char **argv) {
  struct client_options o = {0};
  o.max_message = 64u << 20;
  /* Every -H and --subprotocol takes two arguments at least: argc bounds
   * both lists. */
  o.headers = calloc((size_t)argc, sizeof(*o.headers));
  o.protocols = calloc((size_t)argc, sizeof(*o.protocols));
  int rv = EXIT_CONNECT;
  if (o.headers == NULL || o.protocols == NULL) {
    fprintf(stderr, "herald client: out of memory\n");
    goto done;
  }
  rv = parse_args(argc, argv, &o);
  if (rv >= 0) {
    goto done;
  }
  /* With a standard descriptor closed, the loop's own descriptors would
   * take its number and libuv refuses to close fds 0-2: fill the gaps. */
  for (int fd = 0; fd <= 2; fd++) {
    if (fcntl(fd, F_GETFD) < 0 && errno == EBADF &&
        open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY) < 0) {
      break;
    }
  }
  /* A peer that vanishes must give us EPIPE, not kill us. */
  signal(SIGPIPE, SIG_IGN);
  rv = client_run(&o);

done:
  free(o.headers);
  free(o.protocols);
  return rv;
}
