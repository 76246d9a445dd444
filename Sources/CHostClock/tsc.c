#include "CHostClock.h"

uint64_t p2plab_host_tsc(void)
{
#if defined(__x86_64__)
	return __builtin_ia32_rdtsc();
#else
	return 0;
#endif
}
