/* static.c - files from the directory `static_dir` names (docs/config.md),
 * for a production server that serves its own page next to the API: a GET
 * of /a/b.html reads STATIC_DIR/a/b.html. Paths are decoded, then refused
 * if any segment is empty-dot, "..", hidden (starts with '.') or holds a
 * NUL or a backslash; files are opened below the directory with
 * O_NOFOLLOW on every step, so neither ".." nor a symbolic link leads
 * outside it. Only regular files up to PUSH_STATIC_MAX_FILE are served. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "push/server_int.h"

static const struct {
  const char *ext, *type;
} types[] = {
    {".html", "text/html; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".mjs", "text/javascript; charset=utf-8"},
    {".json", "application/json"},
    {".svg", "image/svg+xml"},
    {".png", "image/png"},
    {".jpg", "image/jpeg"},
    {".jpeg", "image/jpeg"},
    {".gif", "image/gif"},
    {".ico", "image/x-icon"},
    {".webp", "image/webp"},
    {".txt", "text/plain; charset=utf-8"},
    {".wasm", "application/wasm"},
    {".woff2", "font/woff2"},
};

static const char *content_type(const char *name) {
  const char *dot = strrchr(name, '.');
  if (dot != NULL) {
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
      if (strcasecmp(dot, types[i].ext) == 0) {
        return types[i].type;
      }
    }
  }
  return "application/octet-stream";
}

static int hexval(char ch) {
  return ch >= '0' && ch <= '9'   ? ch - '0'
         : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
         : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                  : -1;
}

/* Decodes the request path into out (NUL-terminated) and checks every
 * segment. Returns 0, or -1 for a path that must not be served. */
static int decode_path(herald_str path, char *out, size_t cap) {
  size_t o = 0;
  for (size_t i = 0; i < path.len; i++) {
    char ch = path.ptr[i];
    if (ch == '%') {
      int hi = i + 2 < path.len ? hexval(path.ptr[i + 1]) : -1;
      int lo = i + 2 < path.len ? hexval(path.ptr[i + 2]) : -1;
      if (i + 2 >= path.len || hi < 0 || lo < 0) {
        return -1;
      }
      ch = (char)(hi * 16 + lo);
      i += 2;
    }
    if (ch == 0 || ch == '\\' || o + 1 >= cap) {
      return -1;
    }
    out[o++] = ch;
  }
  out[o] = 0;
  if (o == 0 || out[0] != '/') {
    return -1;
  }
  /* Every segment after a '/': none may start with '.', which covers ".",
   * ".." and hidden files; "//" (an empty segment) is refused too. */
  for (size_t i = 0; i < o; i++) {
    if (out[i] == '/' && i + 1 < o &&
        (out[i + 1] == '.' || out[i + 1] == '/')) {
      return -1;
    }
  }
  return 0;
}

/* Opens rel (no leading '/') below dirfd, one segment at a time with
 * O_NOFOLLOW. Returns a descriptor or -1 with errno set. */
static int open_below(int dirfd, char *rel) {
  int fd = dup(dirfd);
  char *seg = rel;
  while (fd >= 0) {
    char *slash = strchr(seg, '/');
    if (slash) {
      *slash = 0;
    }
    int flags = O_RDONLY | O_NOFOLLOW | O_CLOEXEC | (slash ? O_DIRECTORY : 0);
    int next = openat(fd, seg, flags);
    int saved = errno;
    close(fd);
    errno = saved;
    fd = next;
    if (!slash) {
      break;
    }
    seg = slash + 1;
  }
  return fd;
}

int push_static_serve(push_server *ps, herald_http *h,
                      const herald_request *req) {
  char path[1024];
  if (ps->cfg->static_dir == NULL) {
    return 0;
  }
  if (decode_path(req->path, path, sizeof(path) - 16) != 0) {
    push_http_error(h, 404, PUSH_E_BAD_REQUEST, "not found");
    return 1;
  }
  if (path[strlen(path) - 1] == '/') {
    strcat(path, "index.html");
  }
  const char *type = content_type(path); /* open_below cuts path up */
  int dir = open(ps->cfg->static_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int fd = dir < 0 ? -1 : open_below(dir, path + 1);
  if (dir >= 0) {
    close(dir);
  }
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    if (fd >= 0) {
      close(fd);
    }
    push_http_error(h, 404, PUSH_E_BAD_REQUEST, "not found");
    return 1;
  }
  if ((uint64_t)st.st_size > PUSH_STATIC_MAX_FILE) {
    close(fd);
    push_http_error(h, 403, PUSH_E_LIMIT,
                    "file larger than herald serves from static_dir");
    return 1;
  }
  size_t len = (size_t)st.st_size, got = 0;
  char *buf = malloc(len ? len : 1);
  while (buf != NULL && got < len) {
    ssize_t r = read(fd, buf + got, len - got);
    if (r <= 0) {
      break;
    }
    got += (size_t)r;
  }
  close(fd);
  if (buf == NULL || got != len) {
    free(buf);
    push_http_error(h, 503, PUSH_E_INTERNAL, "cannot read the file");
    return 1;
  }
  herald_header hdrs[] = {{{"Content-Type", 12}, {type, strlen(type)}},
                          {{"Cache-Control", 13}, {"no-cache", 8}}};
  herald_http_respond(h, 200, hdrs, 2, buf, len);
  free(buf);
  return 1;
}
