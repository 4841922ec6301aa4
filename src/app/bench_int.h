/* bench_int.h - what the files of `herald bench` (echo, connect and idle
 * modes) share: its options and counters, and the functions that parse
 * the command line (bench_opts.c) and print the report (bench_report.c).
 * Internal to src/app. */
#ifndef HERALD_APP_BENCH_INT_H
#define HERALD_APP_BENCH_INT_H

#include "app/bench_proc.h"
#include "app/cli.h"
#include "app/hist.h"
#include "herald/rt.h"
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

enum mode { MODE_ECHO, MODE_CONNECT, MODE_IDLE };
enum phase { PH_SETUP, PH_WARMUP, PH_MEASURE, PH_DRAIN };
enum cstate { C_NONE, C_CONNECTING, C_OPEN, C_CLOSING, C_DONE };

struct bench;

typedef struct bconn {
  struct bench *b;
  herald_ws *ws;
  uint64_t *sent; /* ring of send times (ns) of the messages in flight */
  uint32_t head, count, cap;
  uint64_t started; /* ns: herald_connect() called */
  uint8_t state;
} bconn;

typedef struct bench {
  /* options */
  const char *url;
  enum mode mode;
  size_t nconns;
  uint32_t inflight;
  size_t size;
  int binary;
  int deflate;
  int insecure;
  const char *ca_file;
  double duration, warmup;
  char **sources;
  size_t nsources;
  int json;
  long server_pid;
  size_t connect_inflight;
  double rate; /* echo: messages per second in all, open loop; 0: closed */
  herald_client_config ccfg;

  herald_loop *loop;
  uv_timer_t phase_timer;
  uv_timer_t rate_timer;     /* --rate: every millisecond */
  uv_timer_t progress_timer; /* the live line on a terminal */
  int timers_live;
  int progress; /* stderr is a terminal and --json is off */
  int progress_shown;
  uint64_t progress_msgs, progress_t;
  enum phase phase;
  bconn *conns;
  uint8_t *payload;
  herald_opcode op;
  size_t next_start;   /* setup: next connection to start */
  size_t connecting;   /* connects outstanding */
  size_t open;         /* open now */
  size_t live;         /* connections not yet closed (any state) */
  uint64_t src_rr;     /* connect mode: source address round robin */
  uint64_t rate_start; /* --rate: ns when the schedule began */
  uint64_t scheduled;  /* --rate: messages due so far */
  size_t rate_rr;      /* --rate: the next connection to send on */

  /* counted during the measured window only */
  uint64_t msgs, bytes, connects, sent_window;
  hist lat;
  /* counted over the whole run */
  uint64_t opened, failed, lost, bad_echo, send_errors, behind;
  uint64_t setup_start, setup_end;

  /* the measured window */
  uint64_t t0, t1;
  double cpu0, cpu1;
  bp_snap srv0, srv1;
  int srv_ok;
} bench;

/* Prints the usage of `herald bench` to out. */
void bench_usage(FILE *out);
/* Fills b from the command line. Returns 0, or 2 (the exit status) after
 * printing a usage error. */
int bench_parse_args(bench *b, int argc, char **argv);
/* Prints the run's figures (text, or JSON with --json). */
void bench_report(const bench *b);

#endif
