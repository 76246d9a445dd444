#ifndef CP2PLABUAPI_H
#define CP2PLABUAPI_H
/* The module's uAPI (a link to kernel/module/p2plab_uapi.h), plus the ioctl
 * numbers as constants: Swift cannot import the function-like _IOWR macros. */
#include "p2plab_uapi.h"

extern const unsigned long p2plab_ioctl_pin;
extern const unsigned long p2plab_ioctl_release;
extern const unsigned long p2plab_ioctl_umem;
extern const unsigned long p2plab_ioctl_stats;
extern const unsigned long p2plab_ioctl_control;
extern const unsigned long p2plab_ioctl_pgmap;
/* ioctl(fd, request, value) for requests that take their argument by value (Swift cannot call the
 * variadic ioctl with a plain integer). */
int p2plab_ioctl_value(int fd, unsigned long request, unsigned long value);

#include <stddef.h>
#include <stdint.h>

/* Child processes of the teardown checks (teardown.c). Every function returns
 * 0 or a negative errno. */
#define P2PLAB_FORK_MAX_PAGES 64

/* What a forked child saw of a mapping its parent made. */
struct p2plab_fork_report {
	int mincore_errno;    /* mincore() over the range failed with this (e.g. ENOMEM: not mapped) */
	int pagemap_result;   /* 0, or -errno reading /proc/self/pagemap */
	int wrote;            /* the child wrote pattern + i into page i */
	int child_status;     /* waitpid() status */
	uint64_t pfns[P2PLAB_FORK_MAX_PAGES]; /* the child's PFNs (0: not present) */
};

/* How a child that was to do one thing ended. */
struct p2plab_child_outcome {
	int timed_out;        /* still running at the deadline: SIGKILLed */
	int status;           /* waitpid() status */
	long elapsed_ms;
};

/* PFNs of npages pages at addr from /proc/self/pagemap (0: not present; needs CAP_SYS_ADMIN). */
int p2plab_pagemap_pfns(const void *addr, size_t npages, uint64_t *pfns);
/* fork(); the child reports mincore, its PFNs, and (pattern != 0) writes pattern + i into page i. */
int p2plab_fork_probe(void *addr, size_t npages, uint64_t pattern, struct p2plab_fork_report *report);
/* fork(); the child stores value at addr and exits; SIGKILLed after timeout_ms. */
int p2plab_write_in_child(void *addr, uint64_t value, int timeout_ms, struct p2plab_child_outcome *outcome);
/* fork(); the child maps length bytes of allocate, takes a writable held UMEM of them through
 * module_file with the given stand-in PCI function, reports the UMEM request, and waits to be killed. */
/* A held writable ib_umem_get() through the PCI function: um->result the module's answer or -errno. */
void p2plab_umem_hold(int mfd, void *addr, size_t length, uint32_t pci_domain, uint32_t pci_bus,
		      uint32_t pci_devfn, struct p2plab_umem *um);
int p2plab_spawn_umem_holder(const char *module_file, const char *allocate, size_t length,
			     uint32_t pci_domain, uint32_t pci_bus, uint32_t pci_devfn,
			     int *pid_out, struct p2plab_umem *result);
/* posix_spawn() of argv[0] (argv NULL-terminated) with stdout and stderr into output (NUL-terminated,
 * the rest read and dropped), then waitpid(). */
int p2plab_run_capture(char *const argv[], char *output, size_t size, int *status);
/* SIGKILL and waitpid. */
int p2plab_kill_and_reap(int pid, int *status);
/* The calling thread's id, as the kernel names tasks (hung-task reports, /proc/PID/task/TID). */
int p2plab_gettid(void);
/* mremap(old, length, length, MREMAP_MAYMOVE | MREMAP_FIXED, target); NULL with errno on failure. */
void *p2plab_mremap_fixed(void *old, size_t length, void *target);
/* fork(); the child writes text to the sysfs file path and exits with 0 or the errno (torture.c). */
int p2plab_sysfs_write_in_child(const char *path, const char *text, size_t length, int *pid_out);
/* waitpid(WNOHANG): 1 when the child has ended (status set), 0 while it runs, or -errno. */
int p2plab_poll_child(int pid, int *status);
/* fork(); the child opens module_file and issues CONTROL what (P2PLAB_CONTROL_HANG: it never
 * returns); the parent gets the child's pid at once. */
int p2plab_spawn_control(const char *module_file, uint32_t what, int *pid_out);
#endif
