#include "CP2PLabUAPI.h"

const unsigned long p2plab_ioctl_pin = P2PLAB_IOCTL_PIN;
const unsigned long p2plab_ioctl_release = P2PLAB_IOCTL_RELEASE;
const unsigned long p2plab_ioctl_umem = P2PLAB_IOCTL_UMEM;
const unsigned long p2plab_ioctl_stats = P2PLAB_IOCTL_STATS;
const unsigned long p2plab_ioctl_control = P2PLAB_IOCTL_CONTROL;
const unsigned long p2plab_ioctl_pgmap = P2PLAB_IOCTL_PGMAP;

#include <sys/ioctl.h>

int p2plab_ioctl_value(int fd, unsigned long request, unsigned long value)
{
	return ioctl(fd, request, value);
}
