/* client.c - `herald client`: a WebSocket client for the terminal and for
 * scripts, in the manner of websocat and wscat.
 *
 * A session is one connection (or, with --reconnect, one after another)
 * and stdin:
 *
 *   - On a terminal (stdin and stdout both), lines are edited with libedit
 *     and sent; received messages are printed behind "< " while the line
 *     being typed is kept; /ping, /close and /quit are commands.
 *   - In a pipe, stdin is cut into messages (lines, the whole input, fixed
 *     chunks or length-prefixed) and received messages go to stdout as they
 *     are. At the end of stdin the client waits for replies: until --linger
 *     seconds pass without one (default 1), or with --no-close until the
 *     server closes. -1 sends one message, prints the first reply and ends.
 *   - --echo sends every message back (a conformance runner drives it).
 *   - --listen PORT waits for one connection instead of making one.
 *
 * The connection itself (URL, proxy, TLS, handshake, frames) is
 * client_net.c; printing and cutting stdin is client_io.c; line editing is
 * client_term.c. Exit codes are in the usage text.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "app/cli.h"
#include "app/client.h"

#define STDIN_CHUNK (64 * 1024)
#define RECONNECT_MAX_MS 30000
#define MAX_PINGS 16

enum stdin_kind { IN_NONE, IN_STREAM, IN_FILE };

typedef struct session {
  uv_loop_t loop;
  const client_opts *o;
  cnet *net; /* NULL between connections */
  cout out;
  cin in;
  cterm *term;
  int interactive;
  int exit_code;
  int stopping;  /* no reconnect: the user is done (EOF, signal, /quit) */
  int we_closed; /* the close handshake was ours */
  int sent_one;  /* -1: the message is sent */
  int got_one;   /* -1: the reply is printed */
  uint32_t retry_ms;

  /* stdin: a stream handle (pipe, tty, socket) or, for regular files and
   * devices that libuv cannot poll, a chain of uv_fs_read. */
  enum stdin_kind in_kind;
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_pipe_t pipe;
    uv_tty_t tty;
    uv_tcp_t tcp;
  } inh;
  int in_open;    /* the handle is not closed yet */
  int in_reading; /* uv_read_start is in force */
  int in_eof;     /* stdin is finished */
  int fs_busy;    /* a uv_fs_read is in flight */
  uv_fs_t fs_req;
  char *rbuf;

  uv_timer_t linger; /* after the end of stdin */
  uv_timer_t retry;  /* --reconnect */
  uv_signal_t sigint, sigterm;

  /* /ping: payloads sent and when, for the round-trip time. */
  struct {
    uint32_t seq;
    uint64_t sent_ns;
  } pings[MAX_PINGS];
  uint32_t ping_seq;
} session;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- output ------------------------------------------------------------- */

static void show(session *s, herald_opcode op, const uint8_t *data,
                 size_t len) {
  if (s->o->quiet || s->out.broken) {
    return;
  }
  cterm_before_output(s->term);
  int rv = cout_message(&s->out, op, data, len);
  cterm_after_output(s->term);
  if (rv != 0 && s->net) {
    /* Nobody reads our output any more: say goodbye as at stdin's end. */
    s->stopping = 1;
    s->we_closed = 1;
    cnet_close(s->net, HERALD_CLOSE_NORMAL, "");
  }
}

static void note(session *s, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* A line of ours: on the terminal it goes with the messages (stdout); in a
 * pipe, stdout is the messages only, so it goes to stderr. */
static void note(session *s, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  if (s->interactive) {
    cterm_before_output(s->term);
    cout_note(&s->out, "%s", line);
    cterm_after_output(s->term);
  } else {
    fprintf(stderr, "herald client: %s\n", line);
  }
}

/* ---- the end ------------------------------------------------------------ */

static void stdin_close(session *s);
static void connect_now(session *s);

static void on_handle_closed(uv_handle_t *h) {
  (void)h;
}

/* Nothing more will happen: close every handle so the loop ends. */
static void shut_down(session *s) {
  s->stopping = 1;
  stdin_close(s);
  if (s->term) {
    cterm_del(s->term);
    s->term = NULL;
  }
  uv_timer_stop(&s->linger);
  uv_timer_stop(&s->retry);
  if (!uv_is_closing((uv_handle_t *)&s->sigint)) {
    uv_close((uv_handle_t *)&s->sigint, on_handle_closed);
    uv_close((uv_handle_t *)&s->sigterm, on_handle_closed);
    uv_close((uv_handle_t *)&s->linger, on_handle_closed);
    uv_close((uv_handle_t *)&s->retry, on_handle_closed);
  }
}

/* The user is done (end of input, /quit, -1 answered): close politely. */
static void finish_session(session *s, uint16_t code, const char *reason) {
  s->stopping = 1;
  if (s->net) {
    s->we_closed = 1;
    cnet_close(s->net, code, reason);
  } else {
    shut_down(s);
  }
}

/* ---- stdin -------------------------------------------------------------- */

static void stdin_pause(session *s) {
  if (s->in_kind == IN_STREAM && s->in_open && s->in_reading) {
    uv_read_stop(&s->inh.stream);
    s->in_reading = 0;
  }
}

static void on_in_closed(uv_handle_t *h) {
  session *s = h->data;
  s->in_open = 0;
}

static void stdin_close(session *s) {
  s->in_eof = 1;
  if (s->in_kind == IN_STREAM && s->in_open && !uv_is_closing(&s->inh.handle)) {
    uv_close(&s->inh.handle, on_in_closed);
  }
}

static void send_message(void *ud, const uint8_t *data, size_t len) {
  session *s = ud;
  if (s->net == NULL || (s->o->one && s->sent_one)) {
    return;
  }
  int rv = cnet_send(s->net, s->o->binary ? HERALD_OP_BINARY : HERALD_OP_TEXT,
                     data, len);
  if (rv != 0) {
    note(s, "not sent: %s", herald_strerror(rv));
    return;
  }
  s->sent_one = 1;
  if (cnet_busy(s->net)) {
    stdin_pause(s); /* on_drain resumes */
  }
}

static void on_linger(uv_timer_t *t) {
  session *s = t->data;
  finish_session(s, HERALD_CLOSE_NORMAL, "");
}

/* (Re)starts the wait for replies after the end of input. */
static void linger_again(session *s) {
  if (!s->in_eof || s->stopping || s->o->no_close || s->o->one || s->o->echo ||
      s->interactive) {
    return;
  }
  if (s->o->linger_ms == 0) {
    finish_session(s, HERALD_CLOSE_NORMAL, "");
    return;
  }
  uv_timer_start(&s->linger, on_linger, s->o->linger_ms, 0);
}

/* The end of stdin: send what is left, then wait for replies. */
static void input_end(session *s) {
  if (s->in_eof) {
    return;
  }
  if (cin_end(&s->in, send_message, s) != 0) {
    s->exit_code = CLIENT_EXIT_USAGE;
  }
  stdin_close(s);
  if (s->o->one && !s->sent_one) {
    note(s, "-1: stdin held no message to send");
    finish_session(s, HERALD_CLOSE_NORMAL, "");
    return;
  }
  linger_again(s);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  session *s = h->data;
  (void)suggested;
  *buf = uv_buf_init(s->rbuf, STDIN_CHUNK);
}

static void on_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf) {
  session *s = st->data;
  if (nread > 0) {
    cin_feed(&s->in, (const uint8_t *)buf->base, (size_t)nread, send_message,
             s);
    if (s->o->one && s->sent_one) {
      stdin_pause(s); /* the one message is out */
    }
  } else if (nread < 0) {
    if (nread != UV_EOF) {
      fprintf(stderr, "herald client: stdin: %s\n", uv_strerror((int)nread));
    }
    input_end(s);
  }
}

static void fs_read_next(session *s);

static void on_fs_read(uv_fs_t *req) {
  session *s = req->data;
  ssize_t n = req->result;
  uv_fs_req_cleanup(req);
  s->fs_busy = 0;
  if (s->in_eof || s->stopping) {
    return;
  }
  if (n > 0) {
    cin_feed(&s->in, (const uint8_t *)s->rbuf, (size_t)n, send_message, s);
    fs_read_next(s);
    return;
  }
  if (n < 0) {
    fprintf(stderr, "herald client: stdin: %s\n", uv_strerror((int)n));
  }
  input_end(s);
}

static void fs_read_next(session *s) {
  if (s->fs_busy || s->in_eof || s->net == NULL || cnet_busy(s->net) ||
      (s->o->one && s->sent_one)) {
    return;
  }
  uv_buf_t b = uv_buf_init(s->rbuf, STDIN_CHUNK);
  s->fs_req.data = s;
  int rv =
      uv_fs_read(&s->loop, &s->fs_req, STDIN_FILENO, &b, 1, -1, on_fs_read);
  if (rv != 0) {
    fprintf(stderr, "herald client: stdin: %s\n", uv_strerror(rv));
    input_end(s);
    return;
  }
  s->fs_busy = 1;
}

/* Opens fd 0 the way libuv can read it. Returns 0, or -1 when stdin cannot
 * be read at all (closed), which counts as an immediate end of input. */
static int stdin_open(session *s) {
  int rv;
  switch (uv_guess_handle(STDIN_FILENO)) {
  case UV_TTY:
    rv = uv_tty_init(&s->loop, &s->inh.tty, STDIN_FILENO, 1);
    break;
  case UV_NAMED_PIPE:
    rv = uv_pipe_init(&s->loop, &s->inh.pipe, 0);
    if (rv == 0) {
      s->in_open = 1;
      s->inh.handle.data = s;
      rv = uv_pipe_open(&s->inh.pipe, STDIN_FILENO);
    }
    break;
  case UV_TCP:
    rv = uv_tcp_init(&s->loop, &s->inh.tcp);
    if (rv == 0) {
      s->in_open = 1;
      s->inh.handle.data = s;
      rv = uv_tcp_open(&s->inh.tcp, STDIN_FILENO);
    }
    break;
  case UV_FILE:
    s->in_kind = IN_FILE;
    return 0;
  default:
    return -1;
  }
  s->in_open = rv == 0 || s->in_open;
  s->inh.handle.data = s;
  if (rv != 0) {
    fprintf(stderr, "herald client: stdin: %s\n", uv_strerror(rv));
    if (s->in_open) {
      uv_close(&s->inh.handle, on_in_closed);
    }
    return -1;
  }
  s->in_kind = IN_STREAM;
  return 0;
}

static void stdin_resume(session *s) {
  if (s->in_eof || s->net == NULL || (s->o->one && s->sent_one)) {
    return;
  }
  if (s->in_kind == IN_FILE) {
    fs_read_next(s);
    return;
  }
  if (s->in_kind != IN_STREAM || s->in_reading) {
    return;
  }
  int rv = uv_read_start(&s->inh.stream, on_alloc, on_read);
  if (rv != 0) {
    fprintf(stderr, "herald client: stdin: %s\n", uv_strerror(rv));
    input_end(s);
    return;
  }
  s->in_reading = 1;
}

/* ---- interactive commands ----------------------------------------------- */

static void command_help(session *s) {
  note(s, "/ping [text]  ping the server and show the round-trip time");
  note(s, "/close [code [reason]]  close (default 1000) and exit");
  note(s, "/quit         close with 1000 and exit");
  note(s, "//text        send \"/text\"");
}

static void send_ping(session *s, const char *text) {
  char payload[126];
  uint32_t seq = ++s->ping_seq;
  int n = text && *text ? snprintf(payload, sizeof(payload), "%s", text)
                        : snprintf(payload, sizeof(payload), "herald-ping-%u",
                                   (unsigned)seq);
  if (n > 125) {
    note(s, "a ping carries at most 125 bytes");
    return;
  }
  int rv = cnet_ping(s->net, payload, (size_t)n);
  if (rv != 0) {
    note(s, "cannot ping: %s", herald_strerror(rv));
    return;
  }
  /* The pong echoes the payload (RFC 6455 5.5.3): ours carry the sequence
   * number; a ping with the user's text is matched as the latest one. */
  s->pings[seq % MAX_PINGS].seq = text && *text ? 0 : seq;
  s->pings[seq % MAX_PINGS].sent_ns = now_ns();
}

static void command(session *s, const char *line) {
  const char *arg = line + strcspn(line, " ");
  size_t cl = (size_t)(arg - line);
  while (*arg == ' ') {
    arg++;
  }
  if (cl == 5 && strncmp(line, "/ping", 5) == 0) {
    send_ping(s, arg);
  } else if (cl == 6 && strncmp(line, "/close", 6) == 0) {
    uint64_t code = HERALD_CLOSE_NORMAL;
    const char *reason = "";
    if (*arg) {
      char num[8];
      size_t nl = strcspn(arg, " ");
      if (nl >= sizeof(num)) {
        nl = sizeof(num) - 1;
      }
      memcpy(num, arg, nl);
      num[nl] = 0;
      if (cli_parse_uint(num, 4999, &code) != 0 ||
          !herald_close_code_valid((uint32_t)code)) {
        note(s, "/close takes a code of 1000-1003, 1007-1014 or 3000-4999");
        return;
      }
      reason = arg + nl;
      while (*reason == ' ') {
        reason++;
      }
      if (strlen(reason) > 123) {
        note(s, "a close reason holds at most 123 bytes");
        return;
      }
    }
    finish_session(s, (uint16_t)code, reason);
  } else if ((cl == 5 && strncmp(line, "/quit", 5) == 0) ||
             (cl == 5 && strncmp(line, "/exit", 5) == 0)) {
    finish_session(s, HERALD_CLOSE_NORMAL, "");
  } else if (cl == 5 && strncmp(line, "/help", 5) == 0) {
    command_help(s);
  } else {
    note(s, "unknown command %.*s (/help lists them; // sends a leading /)",
         (int)cl, line);
  }
}

static void on_line(void *ud, const char *line) {
  session *s = ud;
  if (line == NULL) {
    /* Ctrl-D: the end of input. */
    if (s->term) {
      cterm_del(s->term);
      s->term = NULL;
    }
    finish_session(s, HERALD_CLOSE_NORMAL, "");
    return;
  }
  if (line[0] == '/' && line[1] != '/') {
    command(s, line);
    if (s->stopping && s->term) {
      cterm_del(s->term); /* no prompt after /close or /quit */
      s->term = NULL;
    }
    return;
  }
  if (line[0] == 0) {
    return; /* an empty line is not worth a message */
  }
  if (s->net == NULL) {
    note(s, "not connected: the line is not sent");
    return;
  }
  const char *text = line[0] == '/' ? line + 1 : line;
  send_message(s, (const uint8_t *)text, strlen(text));
}

/* ---- signals ------------------------------------------------------------ */

/* The first SIGINT or SIGTERM closes with 1001; the watchers then stop, so
 * a second signal kills the process the default way. */
static void on_signal(uv_signal_t *sig, int signum) {
  session *s = sig->data;
  uv_signal_stop(&s->sigint);
  uv_signal_stop(&s->sigterm);
  if (s->net) {
    if (s->term) {
      cterm_del(s->term);
      s->term = NULL;
    }
    stdin_close(s);
    finish_session(s, HERALD_CLOSE_GOING_AWAY, "");
  } else if (!s->stopping && s->o->reconnect_ms) {
    shut_down(s); /* waiting to reconnect: just stop */
  } else {
    signal(signum, SIG_DFL);
    raise(signum);
  }
}

/* ---- connection callbacks ---------------------------------------------- */

static void on_open(cnet *n, void *ud) {
  session *s = ud;
  s->retry_ms = s->o->reconnect_ms;
  if (s->interactive || s->o->verbose) {
    const char *proto = cnet_subprotocol(n);
    char extra[200] = "";
    snprintf(extra, sizeof(extra), "%s%s%s%s", proto[0] ? "; subprotocol " : "",
             proto, cnet_deflate(n) ? "; permessage-deflate" : "",
             s->interactive ? "; /help for commands" : "");
    if (s->o->listen) {
      fprintf(stderr, "herald client: connection from %s%s\n", cnet_peer(n),
              extra);
    } else {
      /* The URL without its password, if it has one. */
      const char *u = s->o->url, *sep = strstr(u, "://");
      const char *host = sep ? sep + 3 : u;
      const char *at = strchr(host, '@');
      const char *slash = strchr(host, '/');
      if (at && (slash == NULL || at < slash)) {
        fprintf(stderr, "herald client: connected to %.*s***%s%s\n",
                (int)(host - u), u, at, extra);
      } else {
        fprintf(stderr, "herald client: connected to %s%s\n", u, extra);
      }
    }
    fflush(stderr);
  }
  if (s->o->echo) {
    return;
  }
  if (s->o->nexecute > 0) {
    for (size_t i = 0; i < s->o->nexecute; i++) {
      send_message(s, (const uint8_t *)s->o->execute[i],
                   strlen(s->o->execute[i]));
    }
    s->in_eof = 1;
    linger_again(s);
    return;
  }
  if (s->interactive) {
    if (s->term == NULL) {
      s->term = cterm_new(&s->loop, s->o->no_history, on_line, s);
      if (s->term == NULL) {
        fprintf(stderr, "herald client: cannot start line editing\n");
        finish_session(s, HERALD_CLOSE_NORMAL, "");
      }
    }
    return;
  }
  if (s->in_kind == IN_NONE && !s->in_eof && stdin_open(s) != 0) {
    input_end(s);
    return;
  }
  stdin_resume(s);
}

static void on_message(cnet *n, herald_opcode op, const uint8_t *data,
                       size_t len, void *ud) {
  session *s = ud;
  if (s->o->echo) {
    int rv = cnet_send(n, op, data, len);
    if (rv != 0 && rv != HERALD_ERR_CLOSED) {
      fprintf(stderr, "herald client: send: %s\n", herald_strerror(rv));
    }
    return;
  }
  if (s->o->one) {
    if (s->got_one) {
      return; /* only the first reply counts */
    }
    s->got_one = 1;
    show(s, op, data, len);
    finish_session(s, HERALD_CLOSE_NORMAL, "");
    return;
  }
  show(s, op, data, len);
  linger_again(s);
}

static void on_pong(cnet *n, const uint8_t *data, size_t len, void *ud) {
  session *s = ud;
  (void)n;
  uint64_t t = now_ns();
  unsigned seq = 0;
  char buf[126];
  snprintf(buf, sizeof(buf), "%.*s", (int)len, (const char *)data);
  if (sscanf(buf, "herald-ping-%u", &seq) == 1 &&
      s->pings[seq % MAX_PINGS].seq == seq && seq != 0) {
    double ms = (double)(t - s->pings[seq % MAX_PINGS].sent_ns) / 1e6;
    s->pings[seq % MAX_PINGS].seq = 0;
    note(s, "pong: %.3f ms", ms);
    return;
  }
  /* A custom payload: the latest ping sent stands for it. */
  uint32_t last = s->ping_seq;
  if (last && s->pings[last % MAX_PINGS].sent_ns) {
    double ms = (double)(t - s->pings[last % MAX_PINGS].sent_ns) / 1e6;
    s->pings[last % MAX_PINGS].sent_ns = 0;
    note(s, "pong \"%s\": %.3f ms", buf, ms);
  }
}

static void on_drain(cnet *n, void *ud) {
  session *s = ud;
  (void)n;
  stdin_resume(s);
}

static void on_retry(uv_timer_t *t) {
  session *s = t->data;
  connect_now(s);
}

static void on_close(cnet *n, const cnet_end *end, void *ud) {
  session *s = ud;
  (void)n;
  s->net = NULL;
  stdin_pause(s);
  uv_timer_stop(&s->linger);
  int code = CLIENT_EXIT_NORMAL;
  if (!end->opened) {
    fprintf(stderr, "herald client: %s\n",
            end->error ? end->error : "could not connect");
    code = end->usage ? CLIENT_EXIT_USAGE : CLIENT_EXIT_CONNECT;
  } else if (end->code == HERALD_CLOSE_ABNORMAL) {
    fprintf(stderr, "herald client: connection lost%s%s\n",
            end->error ? ": " : "", end->error ? end->error : "");
    code = CLIENT_EXIT_LOST;
  } else if (end->code == HERALD_CLOSE_NORMAL ||
             end->code == HERALD_CLOSE_GOING_AWAY ||
             end->code == HERALD_CLOSE_NO_STATUS || s->we_closed) {
    if (s->interactive) {
      fprintf(stderr, "herald client: closed: %u%s%s\n", (unsigned)end->code,
              end->reason[0] ? " " : "", end->reason);
    }
    code = CLIENT_EXIT_NORMAL;
  } else {
    fprintf(stderr, "herald client: closed with %u '%s'%s%s\n",
            (unsigned)end->code, end->reason, end->error ? ": " : "",
            end->error ? end->error : "");
    code = CLIENT_EXIT_CLOSE_ERR;
  }
  if (s->exit_code == CLIENT_EXIT_NORMAL || s->exit_code == -1) {
    s->exit_code = code;
  }
  if (s->o->reconnect_ms && !s->stopping && !end->usage) {
    if (s->term) {
      cterm_before_output(s->term);
    }
    fprintf(stderr, "herald client: reconnecting in %.1f s\n",
            s->retry_ms / 1000.0);
    fflush(stderr);
    if (s->term) {
      cterm_after_output(s->term);
    }
    uv_timer_start(&s->retry, on_retry, s->retry_ms, 0);
    s->retry_ms =
        s->retry_ms * 2 > RECONNECT_MAX_MS ? RECONNECT_MAX_MS : s->retry_ms * 2;
    return;
  }
  shut_down(s);
}

static const cnet_callbacks net_cb = {
    .on_open = on_open,
    .on_message = on_message,
    .on_pong = on_pong,
    .on_drain = on_drain,
    .on_close = on_close,
};

static void connect_now(session *s) {
  s->we_closed = 0;
  s->exit_code = -1;
  if (cnet_start(&s->loop, s->o, &net_cb, s, &s->net) != 0) {
    s->exit_code = CLIENT_EXIT_CONNECT;
    shut_down(s);
  }
}

static int client_run(const client_opts *o) {
  session *s = calloc(1, sizeof(*s));
  if (s == NULL || (s->rbuf = malloc(STDIN_CHUNK)) == NULL) {
    free(s);
    fprintf(stderr, "herald client: out of memory\n");
    return CLIENT_EXIT_CONNECT;
  }
  s->o = o;
  s->retry_ms = o->reconnect_ms;
  s->exit_code = -1;
  int tty_in = isatty(STDIN_FILENO), tty_out = isatty(STDOUT_FILENO);
  s->interactive = tty_in && tty_out && !o->echo && o->nexecute == 0 && !o->one;
  s->out.markers = tty_out;
  s->out.timestamps = o->timestamps;
  s->out.pretty = o->pretty;
  s->out.bin = o->bin_out_set ? o->bin_out : tty_out ? COUT_HEX : COUT_RAW;
  s->in.mode = o->in_mode;
  s->in.chunk = o->chunk;
  s->in.max = o->max_message;
  uv_loop_init(&s->loop);
  uv_signal_init(&s->loop, &s->sigint);
  uv_signal_init(&s->loop, &s->sigterm);
  uv_timer_init(&s->loop, &s->linger);
  uv_timer_init(&s->loop, &s->retry);
  s->sigint.data = s->sigterm.data = s->linger.data = s->retry.data = s;
  uv_signal_start(&s->sigint, on_signal, SIGINT);
  uv_signal_start(&s->sigterm, on_signal, SIGTERM);

  connect_now(s);
  uv_run(&s->loop, UV_RUN_DEFAULT);

  if (s->term) {
    cterm_del(s->term);
    s->term = NULL;
    uv_run(&s->loop, UV_RUN_DEFAULT);
  }
  int code = s->exit_code < 0 ? CLIENT_EXIT_CONNECT : s->exit_code;
  if (uv_loop_close(&s->loop) != 0) {
    /* A handle left open would be a bug of ours; do not free under it. */
    fprintf(stderr, "herald client: internal: handles left open\n");
    return code;
  }
  cin_free(&s->in);
  free(s->rbuf);
  free(s);
  return code;
}

int herald_cmd_client(int argc, char **argv) {
  client_opts o = {0};
  o.max_message = 64u << 20;
  o.connect_ms = 10000;
  o.linger_ms = 1000;
  /* Every -H, -x and --subprotocol takes two arguments at least: argc
   * bounds each list. */
  o.headers = calloc((size_t)argc, sizeof(*o.headers));
  o.protocols = calloc((size_t)argc, sizeof(*o.protocols));
  o.execute = calloc((size_t)argc, sizeof(*o.execute));
  int in_set = 0;
  int rv = CLIENT_EXIT_CONNECT;
  if (o.headers == NULL || o.protocols == NULL || o.execute == NULL) {
    fprintf(stderr, "herald client: out of memory\n");
    goto done;
  }
  rv = client_parse_args(argc, argv, &o, &in_set);
  if (rv >= 0) {
    goto done;
  }
  if (!in_set) {
    o.in_mode = o.binary ? CIN_WHOLE : CIN_LINES;
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
  free(o.execute);
  return rv;
}
