/* fuzz_conn_server.c - frames and messages as a server receives them. */
#include "fuzz_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fuzz_conn_run(HERALD_ROLE_SERVER, data, size);
}
