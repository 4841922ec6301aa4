/* fuzz_conn_client.c - frames and messages as a client receives them. */
#include "fuzz_conn.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  return fuzz_conn_run(HERALD_ROLE_CLIENT, data, size);
}
