#include <linux/ioctl.h>
#include "p2plab_gup_test.h"

const unsigned long p2plab_gup_pin_longterm_benchmark = _IOWR('g', 3, struct p2plab_gup_test);
const unsigned long p2plab_gup_pin_longterm_test_start = _IOW('g', 7, struct p2plab_pin_longterm_test);
const unsigned long p2plab_gup_pin_longterm_test_stop = _IO('g', 8);
const unsigned long p2plab_gup_pin_longterm_test_read = _IOW('g', 9, __u64);
