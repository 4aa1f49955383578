// TANDEM_MPI_CHECK: turns a failing MPI return code into tandem::Error with MPI's own text.
#pragma once

#include <mpi.h>

#include "runtime/error.h"

namespace tandem::runtime::detail {
[[noreturn]] [[gnu::cold]] void throw_mpi_error(int code, const char* call, const char* file, int line);
}

#define TANDEM_MPI_CHECK(call)                                                               \
  do {                                                                                       \
    const int tandem_mpi_rc_ = (call);                                                       \
    if (tandem_mpi_rc_ != MPI_SUCCESS) [[unlikely]]                                          \
      ::tandem::runtime::detail::throw_mpi_error(tandem_mpi_rc_, #call, __FILE__, __LINE__); \
  } while (0)
