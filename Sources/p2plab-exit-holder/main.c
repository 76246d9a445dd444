/*
 * p2plab-exit-holder: the child of lifecycle.exit_releases. Takes p2pmem, pins
 * and MRs, says what it holds on stdout, and exits without giving anything
 * back, so the kernel's exit path has to. A small C program rather than the
 * suite's own executable re-run: the suite starts in about 0.7 s under TCG,
 * this in about 0.1 s, and the check waits for it.
 *
 *   p2plab-exit-holder ALLOCATE AVAILABLE MODULE_FILE DDDD:BB:SS.F
 *
 * ALLOCATE and AVAILABLE: the provider's p2pmem/allocate and p2pmem/available;
 * MODULE_FILE: the test module's debugfs file; the PCI function: the provider,
 * also the stand-in HCA's dma_device for ib_umem_get(). Exit status 0 when it
 * holds everything it set out to hold, 1 when anything was refused (each
 * refusal is a FAILED: line), 2 on bad arguments.
 */
#define _GNU_SOURCE
#include "CP2PLabUAPI.h"

#include <errno.h>
#include <fcntl.h>
#include <infiniband/verbs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

enum { PAGES = 16 };

static int failed;

/* `EINVAL`, as the suite names errnos (strerrorname_np: glibc 2.32); else the message. */
static const char *errno_name(int err)
{
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
	if (strerrorname_np(err))
		return strerrorname_np(err);
#endif
	return strerror(err);
}

static void refused(const char *what, int err)
{
	printf("FAILED: %s: %s\n", what, errno_name(err));
	failed = 1;
}

static unsigned long long available(const char *path)
{
	unsigned long long value = 0;
	FILE *f = fopen(path, "r");

	if (f) {
		if (fscanf(f, "%llu", &value) != 1)
			value = 0;
		fclose(f);
	}
	return value;
}

/* `LONGTERM|P2PDMA|WRITE|HOLD`, as the suite names pin flags. */
static void flag_names(uint32_t flags, char *buf, size_t len)
{
	static const struct { uint32_t flag; const char *name; } names[] = {
		{ P2PLAB_PIN_LONGTERM, "LONGTERM" }, { P2PLAB_PIN_P2PDMA, "P2PDMA" },
		{ P2PLAB_PIN_WRITE, "WRITE" }, { P2PLAB_PIN_FAST, "FAST" }, { P2PLAB_PIN_HOLD, "HOLD" },
	};
	size_t i;

	buf[0] = 0;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (flags & names[i].flag) {
			if (buf[0])
				strncat(buf, "|", len - strlen(buf) - 1);
			strncat(buf, names[i].name, len - strlen(buf) - 1);
		}
}

static void hold_pins(int mfd, void *region)
{
	/* Short-term and long-term P2PDMA pins, read-only and writable, each held until exit. */
	static const uint32_t holds[] = {
		P2PLAB_PIN_WRITE | P2PLAB_PIN_P2PDMA | P2PLAB_PIN_HOLD,
		P2PLAB_PIN_LONGTERM | P2PLAB_PIN_P2PDMA | P2PLAB_PIN_HOLD,
		P2PLAB_PIN_LONGTERM | P2PLAB_PIN_P2PDMA | P2PLAB_PIN_WRITE | P2PLAB_PIN_HOLD,
	};
	size_t i;

	for (i = 0; i < sizeof(holds) / sizeof(holds[0]); i++) {
		struct p2plab_pin pin = { .addr = (uintptr_t)region, .nr_pages = PAGES, .flags = holds[i] };
		char names[64], what[96];
		int err = 0;

		flag_names(holds[i], names, sizeof(names));
		if (ioctl(mfd, P2PLAB_IOCTL_PIN, &pin))
			err = errno;
		else if (pin.result < 0)
			err = (int)-pin.result;
		else if (pin.result == 0)
			err = EINVAL; /* pin_user_pages() refuses the flags with 0 (6.12) */
		if (err) {
			snprintf(what, sizeof(what), "%s pin of p2pmem", names);
			refused(what, err);
		} else {
			printf("holding a %s pin of %lld pages (handle %u)\n", names, (long long)pin.result, pin.handle);
		}
	}
}

static void hold_umem(int mfd, void *region, unsigned int domain, unsigned int bus, unsigned int devfn)
{
	/* An MR's pin: ib_umem_get() through the stand-in P2P-capable device, kept as an MR keeps it. */
	struct p2plab_umem um;

	p2plab_umem_hold(mfd, region, PAGES * (size_t)sysconf(_SC_PAGESIZE), domain, bus, devfn, &um);
	if (um.result < 0)
		refused("ib_umem_get of p2pmem (held)", (int)-um.result);
	else
		printf("holding a umem of %llu p2pmem pages (ib_umem_get, handle %u)\n", (unsigned long long)um.nr_pages, um.handle);
}

/* A 1 MiB MR of anonymous memory on the first RDMA device, when there is one. */
static void hold_mr(void)
{
	struct ibv_device **list = ibv_get_device_list(NULL);
	struct ibv_context *context;
	struct ibv_pd *pd;
	size_t length = 1 << 20;
	char what[96];
	void *anon;

	if (!list || !list[0])
		return;
	context = ibv_open_device(list[0]);
	anon = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!context || anon == MAP_FAILED)
		return;
	snprintf(what, sizeof(what), "ibv_reg_mr of 1 MiB anonymous memory on %s", ibv_get_device_name(list[0]));
	pd = ibv_alloc_pd(context);
	if (!pd) {
		refused(what, errno);
		return;
	}
	if (!ibv_reg_mr(pd, anon, length, IBV_ACCESS_LOCAL_WRITE | IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_REMOTE_READ))
		refused(what, errno);
	else
		printf("holding a 1 MiB MR on %s\n", ibv_get_device_name(list[0]));
}

int main(int argc, char **argv)
{
	unsigned int domain, bus, slot, fn;
	size_t length = PAGES * (size_t)sysconf(_SC_PAGESIZE);
	uint64_t *words;
	void *region;
	size_t i;
	int afd, mfd;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 5 || sscanf(argv[4], "%x:%x:%x.%x", &domain, &bus, &slot, &fn) != 4) {
		fprintf(stderr, "usage: %s ALLOCATE AVAILABLE MODULE_FILE DDDD:BB:SS.F\n", argv[0]);
		return 2;
	}
	afd = open(argv[1], O_RDWR | O_CLOEXEC);
	region = afd < 0 ? MAP_FAILED : mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, afd, 0);
	if (region == MAP_FAILED) {
		printf("FAILED: mmap of %s failed: %s\n", argv[1], errno_name(errno));
		_exit(1);
	}
	words = region;
	for (i = 0; i < length / sizeof(*words); i++)
		words[i] = 0x7032706c61620000ULL + i;
	printf("mapped %d pages of p2pmem; available now %llu\n", PAGES, available(argv[2]));

	mfd = open(argv[3], O_RDWR | O_CLOEXEC);
	if (mfd < 0) {
		printf("FAILED: test module not loaded (%s: %s): no pins held\n", argv[3], strerror(errno));
		failed = 1;
	} else {
		hold_pins(mfd, region);
		hold_umem(mfd, region, domain, bus, (slot << 3) | fn);
	}
	hold_mr();
	fflush(stdout);
	/* Everything stays as it is: the kernel's exit path gives it back. */
	_exit(failed);
}
