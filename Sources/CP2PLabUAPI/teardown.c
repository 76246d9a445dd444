/*
 * Child processes for the teardown checks. Each child is created with fork()
 * from a multi-threaded program, so it only makes system calls (no malloc, no
 * stdio, no locks) before _exit(); the parent learns what it saw through a pipe.
 */
#define _GNU_SOURCE
#include "CP2PLabUAPI.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PM_PRESENT (1ULL << 63)
#define PM_PFN_MASK ((1ULL << 55) - 1)

static int read_pfns(const void *addr, size_t npages, uint64_t *pfns)
{
	long page = sysconf(_SC_PAGESIZE);
	int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	size_t i;

	if (fd < 0)
		return -errno;
	for (i = 0; i < npages; i++) {
		uint64_t entry = 0;
		off_t off = (off_t)(((uintptr_t)addr / page + i) * sizeof(entry));

		if (pread(fd, &entry, sizeof(entry), off) != sizeof(entry)) {
			int err = errno ? errno : EIO;
			close(fd);
			return -err;
		}
		pfns[i] = (entry & PM_PRESENT) ? (entry & PM_PFN_MASK) : 0;
	}
	close(fd);
	return 0;
}

int p2plab_pagemap_pfns(const void *addr, size_t npages, uint64_t *pfns)
{
	return read_pfns(addr, npages, pfns);
}

/*
 * First thing in every child: the default action for the signals a crash
 * raises. The child inherits the Swift runtime's crash handlers, so a SIGBUS
 * from a zapped p2pmem page, which the checks expect, would start the
 * backtracer, which symbolicates for seconds before the child dies: 22 s seen
 * under TCG on a loaded host, and over the parent's 30 s wait in three fork
 * steps of one torture run. sigaction() is async-signal-safe.
 */
static void child_default_crash_signals(void)
{
	static const int crash[] = { SIGBUS, SIGSEGV, SIGILL, SIGFPE, SIGTRAP, SIGABRT };
	struct sigaction sa;
	size_t i;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (i = 0; i < sizeof(crash) / sizeof(crash[0]); i++)
		sigaction(crash[i], &sa, NULL);
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Reads exactly len bytes, waiting at most timeout_ms in all; -ETIMEDOUT, -EPIPE or 0. */
static int read_all(int fd, void *buf, size_t len, int timeout_ms)
{
	char *p = buf;

	while (len) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		int rc = poll(&pfd, 1, timeout_ms);
		ssize_t n;

		if (rc < 0 && errno == EINTR)
			continue;
		if (rc == 0)
			return -ETIMEDOUT;
		if (rc < 0)
			return -errno;
		n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -EPIPE;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* A child with a pipe back to the parent: the child's pid, or -errno with nothing left open. */
static pid_t fork_with_pipe(int fds[2])
{
	pid_t pid;
	int rc;

	if (pipe2(fds, O_CLOEXEC))
		return -errno;
	pid = fork();
	if (pid < 0) {
		rc = -errno;
		close(fds[0]);
		close(fds[1]);
		return rc;
	}
	return pid;
}

static int reap(pid_t pid, int *status)
{
	while (waitpid(pid, status, 0) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

int p2plab_fork_probe(void *addr, size_t npages, uint64_t pattern,
		      struct p2plab_fork_report *report)
{
	long page = sysconf(_SC_PAGESIZE);
	int fds[2];
	pid_t pid;
	int status, rc;

	if (npages > P2PLAB_FORK_MAX_PAGES)
		return -EINVAL;
	memset(report, 0, sizeof(*report));
	pid = fork_with_pipe(fds);
	if (pid < 0)
		return pid;
	if (pid == 0) {
		struct p2plab_fork_report r;
		unsigned char vec[P2PLAB_FORK_MAX_PAGES];
		size_t i;

		child_default_crash_signals();
		memset(&r, 0, sizeof(r));
		close(fds[0]);
		if (mincore(addr, npages * page, vec)) {
			r.mincore_errno = errno;
		} else {
			r.pagemap_result = read_pfns(addr, npages, r.pfns);
			for (i = 0; pattern && i < npages; i++)
				*(volatile uint64_t *)((char *)addr + i * page) = pattern + i;
			r.wrote = pattern ? 1 : 0;
		}
		_exit(write_all(fds[1], &r, sizeof(r)) ? 2 : 0);
	}
	close(fds[1]);
	rc = read_all(fds[0], report, sizeof(*report), 30000);
	close(fds[0]);
	if (rc == -ETIMEDOUT)
		kill(pid, SIGKILL);
	if (reap(pid, &status) == 0)
		report->child_status = status;
	return rc;
}

int p2plab_write_in_child(void *addr, uint64_t value, int timeout_ms,
			  struct p2plab_child_outcome *outcome)
{
	struct timespec start, now;
	pid_t pid;
	int status;

	memset(outcome, 0, sizeof(*outcome));
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		child_default_crash_signals();
		*(volatile uint64_t *)addr = value;
		_exit(0);
	}
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		pid_t done = waitpid(pid, &status, WNOHANG);
		long elapsed;

		if (done == pid)
			break;
		if (done < 0 && errno != EINTR)
			return -errno;
		clock_gettime(CLOCK_MONOTONIC, &now);
		elapsed = (now.tv_sec - start.tv_sec) * 1000 +
			  (now.tv_nsec - start.tv_nsec) / 1000000;
		if (elapsed >= timeout_ms) {
			outcome->timed_out = 1;
			kill(pid, SIGKILL);
			reap(pid, &status);
			break;
		}
		usleep(10000);
	}
	clock_gettime(CLOCK_MONOTONIC, &now);
	outcome->elapsed_ms = (now.tv_sec - start.tv_sec) * 1000 +
			      (now.tv_nsec - start.tv_nsec) / 1000000;
	outcome->status = status;
	return 0;
}

/*
 * A held writable ib_umem_get() of [addr, addr + length) through the stand-in
 * P2P-capable PCI function, as an MR keeps it: um->result is the module's
 * answer, or -errno when the ioctl itself failed.
 */
void p2plab_umem_hold(int mfd, void *addr, size_t length, uint32_t pci_domain, uint32_t pci_bus,
		      uint32_t pci_devfn, struct p2plab_umem *um)
{
	memset(um, 0, sizeof(*um));
	um->addr = (uintptr_t)addr;
	um->length = length;
	um->access = P2PLAB_UMEM_WRITE | P2PLAB_UMEM_HOLD;
	um->pci_domain = pci_domain;
	um->pci_bus = pci_bus;
	um->pci_devfn = pci_devfn;
	if (ioctl(mfd, P2PLAB_IOCTL_UMEM, um))
		um->result = -errno;
}

int p2plab_spawn_umem_holder(const char *module_file, const char *allocate,
			     size_t length, uint32_t pci_domain, uint32_t pci_bus,
			     uint32_t pci_devfn, int *pid_out,
			     struct p2plab_umem *result)
{
	int fds[2];
	pid_t pid;
	int rc;

	memset(result, 0, sizeof(*result));
	pid = fork_with_pipe(fds);
	if (pid < 0)
		return pid;
	if (pid == 0) {
		struct p2plab_umem um;
		int mfd, afd;
		void *p;

		child_default_crash_signals();
		close(fds[0]);
		memset(&um, 0, sizeof(um));
		um.result = -EBADF;
		afd = open(allocate, O_RDWR | O_CLOEXEC);
		mfd = open(module_file, O_RDWR | O_CLOEXEC);
		p = afd < 0 ? MAP_FAILED :
			mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, afd, 0);
		if (p == MAP_FAILED || mfd < 0)
			um.result = -errno;
		else
			p2plab_umem_hold(mfd, p, length, pci_domain, pci_bus, pci_devfn, &um);
		if (write_all(fds[1], &um, sizeof(um)))
			_exit(2);
		/* Hold everything until killed. */
		for (;;)
			pause();
	}
	close(fds[1]);
	rc = read_all(fds[0], result, sizeof(*result), 60000);
	close(fds[0]);
	if (rc) {
		int status;

		kill(pid, SIGKILL);
		reap(pid, &status);
		return rc;
	}
	*pid_out = pid;
	return 0;
}

int p2plab_kill_and_reap(int pid, int *status)
{
	if (kill(pid, SIGKILL))
		return -errno;
	return reap(pid, status);
}

int p2plab_gettid(void)
{
	return (int)gettid();
}

void *p2plab_mremap_fixed(void *old, size_t length, void *target)
{
	void *p = mremap(old, length, length, MREMAP_MAYMOVE | MREMAP_FIXED, target);

	return p == MAP_FAILED ? NULL : p;
}

int p2plab_spawn_control(const char *module_file, uint32_t what, int *pid_out)
{
	pid_t pid = fork();

	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int mfd;

		child_default_crash_signals();
		mfd = open(module_file, O_RDWR | O_CLOEXEC);

		if (mfd < 0 || ioctl(mfd, P2PLAB_IOCTL_CONTROL, (unsigned long)what))
			_exit(3);
		_exit(0);
	}
	*pid_out = pid;
	return 0;
}

/*
 * posix_spawn() of argv[0] with stdout and stderr on a pipe, read until EOF
 * (at most size - 1 bytes kept, NUL-terminated), then waitpid(): glibc's
 * posix_spawn is a vfork and an exec, with no copy of the caller's page
 * tables, and nothing runs in the child but the exec.
 */
int p2plab_run_capture(char *const argv[], char *output, size_t size, int *status)
{
	posix_spawn_file_actions_t actions;
	extern char **environ;
	size_t used = 0;
	int fds[2];
	pid_t pid;
	int rc;

	if (size)
		output[0] = 0;
	if (pipe2(fds, O_CLOEXEC))
		return -errno;
	posix_spawn_file_actions_init(&actions);
	posix_spawn_file_actions_adddup2(&actions, fds[1], 1);
	posix_spawn_file_actions_adddup2(&actions, fds[1], 2);
	rc = posix_spawn(&pid, argv[0], &actions, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&actions);
	close(fds[1]);
	if (rc) {
		close(fds[0]);
		return -rc;
	}
	for (;;) {
		char scratch[512];
		char *buf = used + 1 < size ? output + used : scratch;
		size_t room = used + 1 < size ? size - 1 - used : sizeof(scratch);
		ssize_t n = read(fds[0], buf, room);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (buf != scratch) {
			used += (size_t)n;
			output[used] = 0;
		}
	}
	close(fds[0]);
	return reap(pid, status);
}
