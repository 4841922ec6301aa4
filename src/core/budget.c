/*
 * budget.c - a byte budget shared by connections on any threads: what they
 * may hold together for messages that have not finished arriving.
 *
 * One atomic counter (the struct and the draws, which are on the message
 * path, are in conn_int.h). reader.c draws for a connection's reassembly
 * buffer and gives back when the message is delivered or the connection
 * fails or goes.
 */
#include <stdatomic.h>

#include "core/conn_int.h"

HERALD_API int herald_budget_new(herald_budget **pbudget, uint64_t limit,
                                 const herald_mem *mem) {
  if (pbudget == NULL) {
    return HERALD_ERR_INVALID_ARG;
  }
  if (mem == NULL) {
    mem = &herald__libc_mem;
  }
  herald_budget *b = mem->malloc(sizeof(*b), mem->user_data);
  if (b == NULL) {
    return HERALD_ERR_NOMEM;
  }
  atomic_init(&b->used, 0);
  atomic_init(&b->refused, 0);
  b->limit = limit;
  b->mem = *mem;
  *pbudget = b;
  return 0;
}

HERALD_API void herald_budget_del(herald_budget *b) {
  if (b != NULL) {
    b->mem.free(b, b->mem.user_data);
  }
}

HERALD_API uint64_t herald_budget_used(const herald_budget *b) {
  return atomic_load_explicit(&((herald_budget *)b)->used,
                              memory_order_relaxed);
}

HERALD_API uint64_t herald_budget_refused(const herald_budget *b) {
  return atomic_load_explicit(&((herald_budget *)b)->refused,
                              memory_order_relaxed);
}
