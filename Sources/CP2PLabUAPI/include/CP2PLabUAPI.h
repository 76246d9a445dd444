#ifndef CP2PLABUAPI_H
#define CP2PLABUAPI_H
/* The module's uAPI (a link to kernel/module/p2plab_uapi.h), plus the ioctl
 * numbers as constants: Swift cannot import the function-like _IOWR macros. */
#include "p2plab_uapi.h"

extern const unsigned long p2plab_ioctl_pin;
extern const unsigned long p2plab_ioctl_release;
extern const unsigned long p2plab_ioctl_umem;
#endif
