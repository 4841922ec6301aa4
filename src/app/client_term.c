/* client_term.c - the interactive mode of `herald client`: libedit reads
 * the terminal, with line editing and history, while the uv loop goes on.
 *
 * libedit runs unbuffered (EL_UNBUFFERED): each el_gets() handles one
 * key and returns, so it is called only when the terminal is readable (a
 * uv_poll on fd 0), and a line is complete when what it returns ends in a
 * newline. A message printed meanwhile first erases the line being edited;
 * EL_REFRESH then draws the prompt and the half-typed line again. */
#include <errno.h>
#include <fcntl.h>
#include <histedit.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app/client.h"

#define HISTORY_SIZE 1000

struct cterm {
  EditLine *el;
  History *hist;
  HistEvent ev;
  uv_poll_t poll;
  int polling;
  cterm_line cb;
  void *ud;
  char *hist_file;
  int editing; /* a prompt is on the screen */
};

static const char *prompt(EditLine *el) {
  (void)el;
  return "> ";
}

static void on_closed(uv_handle_t *h) {
  free(h->data);
}

/* Draws the prompt again for a new line (after one was entered). */
static void new_line(cterm *t) {
  el_set(t->el, EL_UNBUFFERED, 0);
  el_set(t->el, EL_UNBUFFERED, 1);
  t->editing = 1;
}

static void on_key(uv_poll_t *p, int status, int events) {
  cterm *t = p->data;
  (void)events;
  if (status < 0) {
    t->cb(t->ud, NULL);
    return;
  }
  int count = 0;
  const char *line = el_gets(t->el, &count);
  if (line == NULL || count <= 0) {
    if (line == NULL || count < 0) {
      t->editing = 0;
      t->cb(t->ud, NULL); /* end of input */
    }
    return;
  }
  if (count == 1 && line[0] == 4) {
    t->editing = 0;
    t->cb(t->ud, NULL); /* Ctrl-D on an empty line */
    return;
  }
  if (line[count - 1] != '\n' && line[count - 1] != '\r') {
    return; /* the line goes on */
  }
  char *copy = strndup(line, (size_t)count - 1);
  if (copy == NULL) {
    return;
  }
  if (copy[0] != 0) {
    history(t->hist, &t->ev, H_ENTER, copy);
  }
  t->editing = 0;
  t->cb(t->ud, copy);
  free(copy);
  if (t->polling) {
    new_line(t);
  }
}

cterm *cterm_new(uv_loop_t *loop, int no_history, cterm_line cb, void *ud) {
  cterm *t = calloc(1, sizeof(*t));
  if (t == NULL) {
    return NULL;
  }
  t->cb = cb;
  t->ud = ud;
  t->el = el_init("herald", stdin, stdout, stderr);
  t->hist = history_init();
  if (t->el == NULL || t->hist == NULL) {
    if (t->el) {
      el_end(t->el);
    }
    if (t->hist) {
      history_end(t->hist);
    }
    free(t);
    return NULL;
  }
  history(t->hist, &t->ev, H_SETSIZE, HISTORY_SIZE);
  history(t->hist, &t->ev, H_SETUNIQUE, 1);
  el_set(t->el, EL_EDITOR, "emacs");
  el_set(t->el, EL_PROMPT, prompt);
  el_set(t->el, EL_HIST, history, t->hist);
  el_set(t->el, EL_SIGNAL, 1); /* restore the terminal on signals */
  el_source(t->el, NULL);      /* ~/.editrc, as every libedit program */
  const char *home = getenv("HOME");
  if (!no_history && home && *home) {
    size_t n = strlen(home) + 32;
    t->hist_file = malloc(n);
    if (t->hist_file) {
      snprintf(t->hist_file, n, "%s/.herald_history", home);
      history(t->hist, &t->ev, H_LOAD, t->hist_file);
    }
  }
  if (uv_poll_init(loop, &t->poll, STDIN_FILENO) != 0) {
    el_end(t->el);
    history_end(t->hist);
    free(t->hist_file);
    free(t);
    return NULL;
  }
  /* uv_poll made fd 0 non-blocking; libedit reads it only once poll says
   * it is readable, and wants a blocking descriptor for the bytes of one
   * multi-byte character. */
  int fl = fcntl(STDIN_FILENO, F_GETFL);
  if (fl >= 0) {
    (void)fcntl(STDIN_FILENO, F_SETFL, fl & ~O_NONBLOCK);
  }
  t->poll.data = t;
  t->polling = 1;
  uv_poll_start(&t->poll, UV_READABLE, on_key);
  new_line(t);
  return t;
}

void cterm_before_output(cterm *t) {
  if (t && t->editing) {
    fputs("\r\033[K", stdout); /* erase the prompt and the line */
    fflush(stdout);
  }
}

void cterm_after_output(cterm *t) {
  if (t && t->editing) {
    el_set(t->el, EL_REFRESH);
    fflush(stdout);
  }
}

void cterm_del(cterm *t) {
  if (t == NULL) {
    return;
  }
  if (t->editing) {
    fputs("\r\033[K", stdout);
    fflush(stdout);
  }
  t->editing = 0;
  t->polling = 0;
  if (t->hist_file) {
    history(t->hist, &t->ev, H_SAVE, t->hist_file);
    free(t->hist_file);
  }
  el_set(t->el, EL_UNBUFFERED, 0);
  el_end(t->el);
  history_end(t->hist);
  /* t is freed once the poll handle inside it is closed. */
  t->poll.data = t;
  uv_close((uv_handle_t *)&t->poll, on_closed);
}
