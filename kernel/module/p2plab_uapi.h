/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * p2plab_uapi.h - private interface of the p2plab_test module.
 *
 * The module exposes /sys/kernel/debug/p2plab_test (root only). Userspace
 * (the p2plab suite, Sources/Checks) drives it with the ioctls below, in the
 * manner of mm/gup_test.h. Not a stable ABI: the module and the suite are
 * built from the same tree.
 */
#ifndef _P2PLAB_UAPI_H
#define _P2PLAB_UAPI_H

#include <linux/ioctl.h>
#include <linux/types.h>

/* Name of the debugfs file, below the debugfs mount point. */
#define P2PLAB_DEBUGFS_NAME "p2plab_test"
/* Directory of the test sysfs binary attributes, below /sys/kernel. */
#define P2PLAB_SYSFS_DIR "p2plab_test"
/* Attribute whose mmap installs vm_ops with ->page_mkwrite. */
#define P2PLAB_ATTR_MKWRITE "mkwrite"
/* Attribute whose mmap installs vm_ops with ->close (kernfs refuses it). */
#define P2PLAB_ATTR_CLOSE "close"
/* Plain writable, mmapable attribute (faults pages in via ->fault). */
#define P2PLAB_ATTR_PLAIN "plain"
/* Size of each test attribute, bytes. */
#define P2PLAB_ATTR_SIZE 4096

/* Flags of struct p2plab_pin.flags, translated to FOLL_* in the module. */
enum {
	P2PLAB_PIN_WRITE = 1 << 0,    /* FOLL_WRITE */
	P2PLAB_PIN_LONGTERM = 1 << 1, /* FOLL_LONGTERM */
	P2PLAB_PIN_P2PDMA = 1 << 2,   /* FOLL_PCI_P2PDMA */
	P2PLAB_PIN_FAST = 1 << 3,     /* pin_user_pages_fast(); else pin_user_pages() */
	P2PLAB_PIN_HOLD = 1 << 4,     /* keep the pin until RELEASE or close */
};

/* Value of slow_path_calls when the module could not count them. */
#define P2PLAB_COUNT_UNKNOWN (~(__u64)0)

struct p2plab_pin {
	__u64 addr;            /* (in) user address, page aligned */
	__u64 nr_pages;        /* (in) pages to pin, at most P2PLAB_PIN_MAX_PAGES */
	__u32 flags;           /* (in) P2PLAB_PIN_* */
	__u32 handle;          /* (out) with P2PLAB_PIN_HOLD: id for RELEASE */
	__s64 result;          /* (out) pages pinned, or a negative errno */
	__u64 nr_p2pdma;       /* (out) pinned pages that are PCI P2PDMA pages */
	__u64 elapsed_ns;      /* (out) time spent in the pin call */
	__u64 slow_path_calls; /* (out) slow-GUP entries during the call, or P2PLAB_COUNT_UNKNOWN */
};

#define P2PLAB_PIN_MAX_PAGES (1 << 20)

struct p2plab_release {
	__u32 handle;   /* (in) from struct p2plab_pin or p2plab_umem; 0 releases everything held */
	__u32 reserved; /* (in) must be 0 */
	__u64 released; /* (out) pages unpinned */
};

/* Flags of struct p2plab_umem.access. */
enum {
	P2PLAB_UMEM_WRITE = 1 << 0, /* IB_ACCESS_LOCAL_WRITE */
	P2PLAB_UMEM_HOLD = 1 << 1,  /* keep the umem (as an MR would) until RELEASE or close */
};

struct p2plab_umem {
	__u64 addr;          /* (in) user address */
	__u64 length;        /* (in) bytes */
	__u32 access;        /* (in) P2PLAB_UMEM_* */
	__u32 pci_domain;    /* (in) PCI function used as the stand-in HCA's dma_device */
	__u32 pci_bus;       /* (in) */
	__u32 pci_devfn;     /* (in) PCI_DEVFN(slot, func) */
	__s64 result;        /* (out) mapped DMA entries, or a negative errno */
	__u64 nr_pages;      /* (out) pages in the umem */
	__u64 nr_bus_addr;   /* (out) DMA entries that are PCI bus addresses (P2P) */
	__u64 first_dma_addr;/* (out) DMA address of the first entry */
	__u32 p2p_supported; /* (out) ib_dma_pci_p2p_dma_supported() of the stand-in device */
	__u32 handle;        /* (in) must be 0; (out) with P2PLAB_UMEM_HOLD: id for RELEASE */
};

/* What the module holds right now, over every open file, and what it did since loading. */
struct p2plab_stats {
	__u64 held_pins;     /* pins kept by P2PLAB_PIN_HOLD */
	__u64 held_pages;    /* pages in those pins */
	__u64 held_umems;    /* umems kept by P2PLAB_UMEM_HOLD */
	__u64 pins;          /* successful PIN calls since load */
	__u64 umems;         /* successful UMEM calls since load */
	__u64 zero_ref_refusals; /* vm_insert_page() refusals (-EINVAL) of a P2PDMA page with refcount 0 */
	__u64 zero_ref_probe;    /* 1: the kretprobe counting them is armed */
};

/* Flags of struct p2plab_pgmap.state: the dev_pagemap of a held pin's or umem's first page. */
enum {
	P2PLAB_PGMAP_DEVICE = 1 << 0,    /* the page is a ZONE_DEVICE page (the rest is only set then) */
	P2PLAB_PGMAP_P2PDMA = 1 << 1,    /* MEMORY_DEVICE_PCI_P2PDMA */
	P2PLAB_PGMAP_DEAD = 1 << 2,      /* its reference was killed (memunmap_pages() has begun) */
	P2PLAB_PGMAP_ATOMIC = 1 << 3,    /* the reference counts in atomic mode */
	P2PLAB_PGMAP_SWITCHING = 1 << 4, /* the switch to atomic mode (an RCU grace period) is not done */
	P2PLAB_PGMAP_DONE = 1 << 5,      /* ->done completed: the count reached zero */
	P2PLAB_PGMAP_DMA_PINNED = 1 << 6,/* folio_maybe_dma_pinned() of the page */
};

struct p2plab_pgmap {
	__u32 pid;            /* (in) process whose open file holds it (thread-group id); 0: this file */
	__u32 handle;         /* (in) a held pin or umem of that file */
	__u32 state;          /* (out) P2PLAB_PGMAP_* */
	__u32 reserved;       /* (in) must be 0 */
	__s64 ref_count;      /* (out) the pgmap's references: valid when ATOMIC and not SWITCHING, else -1 */
	__u64 held_pages;     /* (out) pages in the hold */
	__s64 page_refcount;  /* (out) page_ref_count() of the first page */
};

#define P2PLAB_IOCTL_PIN _IOWR('P', 1, struct p2plab_pin)
#define P2PLAB_IOCTL_RELEASE _IOWR('P', 2, struct p2plab_release)
#define P2PLAB_IOCTL_UMEM _IOWR('P', 3, struct p2plab_umem)
#define P2PLAB_IOCTL_STATS _IOR('P', 4, struct p2plab_stats)

/* The argument of P2PLAB_IOCTL_CONTROL (by value): a deliberate failure, refused
 * with -EPERM unless the module parameter allow_crash is set. */
enum {
	P2PLAB_CONTROL_OOPS = 1, /* BUG() in p2plab_control_oops() */
	P2PLAB_CONTROL_HANG = 2, /* wait uninterruptibly forever in p2plab_control_hang() */
	/* wait uninterruptibly for P2PLAB_CONTROL_HANG_BRIEF_SECONDS in
	 * p2plab_control_hang_brief(), then return 0: a hung task that ends */
	P2PLAB_CONTROL_HANG_BRIEF = 3,
};
enum {
	P2PLAB_CONTROL_HANG_BRIEF_SECONDS = 8,
};
#define P2PLAB_IOCTL_CONTROL _IO('P', 5)
/* The state of the dev_pagemap behind a held pin or umem, of this or another process's file:
 * what an unbind blocked in memunmap_pages() waits for. -ESRCH: no open file of that process;
 * -ENOENT: no such handle there. */
#define P2PLAB_IOCTL_PGMAP _IOWR('P', 6, struct p2plab_pgmap)

#endif /* _P2PLAB_UAPI_H */
