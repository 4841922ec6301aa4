/* client.h - the parts of `herald client` and what they share.
 *
 *   client.c       modes, the session (stdin, linger, reconnect)
 *   client_opts.c  the command line and the usage text
 *   client_net.c   one WebSocket connection on the sans-I/O core: its
 *                  stages, the opening handshake, frames, pings, close
 *   client_url.c   the URL and the proxy's URL, userinfo, NO_PROXY
 *   client_tls.c   TLS (wss://) with OpenSSL on the socket
 *   client_proxy.c CONNECT through an HTTP proxy
 *   client_listen.c --listen: accepting one connection
 *   client_connect.c DNS, then a connect to each address in turn
 *   client_io.c    what is printed: markers, timestamps, JSON, binary as
 *                  raw, hex or base64; and how stdin becomes messages
 *   client_term.c  the interactive mode: libedit line editing, history,
 *                  /ping, /close
 *
 * The client runs the core (herald/core.h) over its own socket rather than
 * herald_connect(): the runtime's client cannot be handed a socket that
 * went through a proxy, does not show the handshake's heads, and has no
 * client certificate. Everything here runs on one uv loop, on one thread.
 */
#ifndef HERALD_APP_CLIENT_H
#define HERALD_APP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "herald/core.h"

/* Exit codes, as documented in the usage text. */
enum {
  CLIENT_EXIT_NORMAL = 0,   /* closed with 1000, 1001 or 1005 */
  CLIENT_EXIT_CONNECT = 1,  /* could not connect, or the handshake failed */
  CLIENT_EXIT_USAGE = 2,    /* bad command line or URL */
  CLIENT_EXIT_LOST = 3,     /* connection lost without a close handshake */
  CLIENT_EXIT_CLOSE_ERR = 4 /* the peer closed with another code */
};

enum cin_mode {
  CIN_LINES,  /* each line is a message (default) */
  CIN_WHOLE,  /* all of stdin is one message */
  CIN_CHUNKS, /* --chunk SIZE: fixed-size messages, the last one shorter */
  CIN_PREFIX  /* --length-prefixed: 4-byte big-endian length, then bytes */
};

enum cout_bin { COUT_RAW, COUT_HEX, COUT_BASE64 };

/* The command line. Strings borrow from argv. */
typedef struct client_opts {
  const char *url;
  const char *listen; /* --listen [ADDR:]PORT */
  const char *origin;
  const char *ca_file;
  const char *server_name;
  const char *cert_file;
  const char *key_file;
  const char *proxy;      /* --proxy URL; NULL: from the environment */
  int no_proxy;           /* --no-proxy */
  const char *user_agent; /* NULL: herald-client/VERSION */
  const char **execute;   /* -x MSG (repeatable): send these, not stdin */
  size_t nexecute;
  const char **protocols;
  size_t nprotocols;
  herald_header *headers;
  size_t nheaders;
  uint32_t ping_ms;
  uint32_t connect_ms;
  uint32_t linger_ms;
  uint32_t reconnect_ms; /* 0: no --reconnect */
  uint64_t max_message;
  uint64_t chunk;
  enum cin_mode in_mode;
  enum cout_bin bin_out;
  int bin_out_set;
  int binary, one, no_close, echo, quiet, deflate, insecure, verbose;
  int timestamps, pretty, interactive, no_history;
} client_opts;

/* ---- client_net.c ------------------------------------------------------ */

typedef struct cnet cnet;

/* How a connection ended. */
typedef struct cnet_end {
  int opened;         /* the WebSocket had opened */
  uint16_t code;      /* the peer's close code; 1006 without a close frame */
  const char *reason; /* the peer's reason (NUL-terminated) */
  int remote;         /* the peer sent a close frame */
  const char *error;  /* NULL, or what went wrong, as a sentence */
  int usage;          /* the error is in the command line or URL */
} cnet_end;

typedef struct cnet_callbacks {
  void (*on_open)(cnet *n, void *ud);
  void (*on_message)(cnet *n, herald_opcode op, const uint8_t *data, size_t len,
                     void *ud);
  void (*on_pong)(cnet *n, const uint8_t *data, size_t len, void *ud);
  /* The output queue fell below the low-water mark after cnet_busy(). */
  void (*on_drain)(cnet *n, void *ud);
  /* The last call; n is freed after it returns. */
  void (*on_close)(cnet *n, const cnet_end *end, void *ud);
} cnet_callbacks;

/* ---- client_opts.c ---- */

/* Prints the usage of `herald client` to out. */
void client_usage(FILE *out);
/* Fills o from the command line; *in_set is set when an input mode was
 * given. Returns -1 to go on with the run, or the exit status to end with
 * at once: 0 after --help, CLIENT_EXIT_USAGE after printing a usage
 * error. */
int client_parse_args(int argc, char **argv, client_opts *o, int *in_set);

/* Starts connecting (or, with o->listen, waiting for one connection).
 * Returns 0, or -1 after printing why (a bad URL or option). */
int cnet_start(uv_loop_t *loop, const client_opts *o, const cnet_callbacks *cb,
               void *ud, cnet **pn);

/* Queues a message (copied). Returns 0 or a negative herald_err. */
int cnet_send(cnet *n, herald_opcode op, const void *data, size_t len);

/* Queues a ping (payload up to 125 bytes). */
int cnet_ping(cnet *n, const void *data, size_t len);

/* Starts the close handshake; code 0 sends none. Safe to call twice. */
void cnet_close(cnet *n, uint16_t code, const char *reason);

/* Drops the connection at once (no close handshake). */
void cnet_abort(cnet *n, const char *why);

/* 1 when so much is queued that the sender should wait for on_drain. */
int cnet_busy(const cnet *n);

/* The subprotocol agreed on ("" if none), and whether permessage-deflate
 * is in use. Valid once open. */
const char *cnet_subprotocol(const cnet *n);
int cnet_deflate(const cnet *n);

/* The peer, for messages ("127.0.0.1:9001"). */
const char *cnet_peer(const cnet *n);

/* ---- client_io.c ------------------------------------------------------- */

/* How received messages are printed. */
typedef struct cout {
  int markers;    /* "< " before each message (stdout is a terminal) */
  int timestamps; /* "12:34:56.789 " before each message */
  int pretty;     /* text that parses as JSON is indented */
  enum cout_bin bin;
  int broken; /* stdout failed (EPIPE): nothing more is written */
} cout;

/* Writes one received message to stdout. Returns 0, or -1 when stdout is
 * gone (then out->broken is set). */
int cout_message(cout *out, herald_opcode op, const uint8_t *data, size_t len);

/* Writes a line of our own to stdout ("pong 0.21 ms"), with the same
 * timestamp and marker rules. */
int cout_note(cout *out, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Cuts stdin into messages. */
typedef struct cin {
  enum cin_mode mode;
  uint64_t chunk; /* CIN_CHUNKS */
  uint64_t max;   /* the largest message: longer input is an error */
  uint8_t *buf;   /* bytes carried between reads */
  size_t len, cap;
  int failed; /* a message was too long or a prefix was cut short */
} cin;

/* Called for each complete message; data is valid during the call. */
typedef void (*cin_emit)(void *ud, const uint8_t *data, size_t len);

/* Feeds bytes read from stdin. */
void cin_feed(cin *in, const uint8_t *data, size_t len, cin_emit emit,
              void *ud);

/* The end of stdin: emits what is left (a last line without its newline,
 * the whole input, the last chunk). Returns 0, or -1 when the input ended
 * inside a length-prefixed message (and says so on stderr). */
int cin_end(cin *in, cin_emit emit, void *ud);

void cin_free(cin *in);

/* Base64 (RFC 4648) of in into out (4 * ceil(inlen / 3) + 1 bytes). */
size_t client_base64(const uint8_t *in, size_t inlen, char *out);

/* ---- client_term.c ----------------------------------------------------- */

typedef struct cterm cterm;

/* A line the user entered (without its newline), or NULL for the end of
 * input (Ctrl-D). */
typedef void (*cterm_line)(void *ud, const char *line);

/* Starts line editing on the terminal at fd 0: prompt "> ", history (kept
 * in $HOME/.herald_history unless no_history). Returns NULL on failure. */
cterm *cterm_new(uv_loop_t *loop, int no_history, cterm_line cb, void *ud);

/* Prints a received message or a note without breaking the line being
 * edited: the line is redrawn after it. Call around any stdout output. */
void cterm_before_output(cterm *t);
void cterm_after_output(cterm *t);

/* Stops reading the terminal and restores it; frees t (after the uv
 * handle is closed). */
void cterm_del(cterm *t);

#endif
