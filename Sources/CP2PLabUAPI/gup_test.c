#include <linux/ioctl.h>
#include "p2plab_gup_test.h"

const unsigned long p2plab_gup_pin_longterm_benchmark = _IOWR('g', 3, struct p2plab_gup_test);
