/* SPDX-License-Identifier: GPL-2.0-or-later */
/*
 * p2plab_gup_test.h - the kernel's gup_test interface, for the oracle.gup_test check.
 *
 * Origin: mm/gup_test.h of Linux 6.12 (Debian linux-source-6.12). The kernel does not export that
 * header as uAPI, so the struct is repeated here field for field; it must stay layout-compatible
 * with `struct gup_test` of the kernel under test. Only what the suite uses is repeated.
 */
#ifndef P2PLAB_GUP_TEST_H
#define P2PLAB_GUP_TEST_H

#include <linux/types.h>

/* Path of the kernel's test file (CONFIG_GUP_TEST), below the debugfs mount point. */
#define P2PLAB_GUP_TEST_DEBUGFS_NAME "gup_test"

/* GUP_TEST_MAX_PAGES_TO_DUMP of mm/gup_test.h */
#define P2PLAB_GUP_TEST_MAX_PAGES_TO_DUMP 8

/* enum foll_flags values of include/linux/mm_types.h in 6.12: gup_test passes gup_flags straight
 * to pin_user_pages(), so the suite has to speak the kernel's internal numbering. */
#define P2PLAB_FOLL_WRITE_6_12 (1u << 0)
#define P2PLAB_FOLL_PCI_P2PDMA_6_12 (1u << 10)

/* struct gup_test of mm/gup_test.h */
struct p2plab_gup_test {
	__u64 get_delta_usec;
	__u64 put_delta_usec;
	__u64 addr;
	__u64 size;
	__u32 nr_pages_per_call;
	__u32 gup_flags;
	__u32 test_flags;
	__u32 which_pages[P2PLAB_GUP_TEST_MAX_PAGES_TO_DUMP];
};

/* PIN_LONGTERM_BENCHMARK, _IOWR('g', 3, struct gup_test): a constant because Swift cannot import
 * the _IOWR macro. */
extern const unsigned long p2plab_gup_pin_longterm_benchmark;

/* PIN_LONGTERM_TEST_FLAG_* of mm/gup_test.h */
#define P2PLAB_PIN_LONGTERM_TEST_FLAG_USE_WRITE 1
#define P2PLAB_PIN_LONGTERM_TEST_FLAG_USE_FAST 2

/* struct pin_longterm_test of mm/gup_test.h */
struct p2plab_pin_longterm_test {
	__u64 addr;
	__u64 size;
	__u32 flags;
};

/* PIN_LONGTERM_TEST_START _IOW('g', 7, struct pin_longterm_test), _STOP _IO('g', 8),
 * _READ _IOW('g', 9, __u64): pin_user_pages{,_fast}(FOLL_LONGTERM[|FOLL_WRITE]), held until STOP,
 * READ copies the pinned pages' contents out through the kernel's own mapping. */
extern const unsigned long p2plab_gup_pin_longterm_test_start;
extern const unsigned long p2plab_gup_pin_longterm_test_stop;
extern const unsigned long p2plab_gup_pin_longterm_test_read;

#endif /* P2PLAB_GUP_TEST_H */
