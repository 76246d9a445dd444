#ifndef CHOSTCLOCK_H
#define CHOSTCLOCK_H

#include <stdint.h>

/// The host CPU's time-stamp counter (RDTSC), or 0 where the host is not x86-64. Under TCG,
/// QEMU's guest TSC is the host's own counter, so its rate is what the guest kernel would
/// otherwise calibrate at boot.
uint64_t p2plab_host_tsc(void);

#endif
