// SPDX-License-Identifier: GPL-2.0
/*
 * Smoke test of the p2plab_test module, independent of the Swift suite.
 * Run as root with the module loaded, on a machine with a p2pmem provider
 * (an NVMe CMB): prints one "ROW" line per pin/umem/kernfs case and
 * "BENCH" lines with pin throughput.
 *
 *   cc -O2 -Wall -o /tmp/p2plab_smoke p2plab_smoke.c   (outside the repo)
 *   p2plab_smoke [nobench]     the table and (unless nobench) throughput
 *   p2plab_smoke hold SECONDS  hold a long-term p2pmem pin, exit holding it
 *   p2plab_smoke leak N        N x (UMEM + open/HOLD/close), for leak checks
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "../p2plab_uapi.h"

#define PG 4096UL
static int fd;
static char prov[64], other[64];

static const char *flagstr(unsigned f)
{
	static char b[128];
	b[0] = 0;
	if (f & P2PLAB_PIN_WRITE) strcat(b, "WRITE|");
	if (f & P2PLAB_PIN_LONGTERM) strcat(b, "LONGTERM|");
	if (f & P2PLAB_PIN_P2PDMA) strcat(b, "P2PDMA|");
	if (f & P2PLAB_PIN_HOLD) strcat(b, "HOLD|");
	strcat(b, (f & P2PLAB_PIN_FAST) ? "fast" : "slow");
	return b;
}

static int pin(void *addr, unsigned long n, unsigned flags, struct p2plab_pin *p)
{
	memset(p, 0, sizeof(*p));
	p->addr = (uintptr_t)addr;
	p->nr_pages = n;
	p->flags = flags;
	return ioctl(fd, P2PLAB_IOCTL_PIN, p);
}

static void row(const char *what, void *addr, unsigned long n, unsigned flags)
{
	struct p2plab_pin p;
	int r = pin(addr, n, flags, &p);
	char res[64];

	if (r) {
		printf("ROW %-8s %-32s ioctl errno %s\n", what, flagstr(flags), strerror(errno));
		return;
	}
	if (p.result < 0)
		snprintf(res, sizeof(res), "%s", strerrorname_np(-p.result));
	else
		snprintf(res, sizeof(res), "pinned %lld/%lu", (long long)p.result, n);
	printf("ROW %-8s %-32s %-18s p2pdma=%llu slow_calls=%lld ns=%llu\n", what,
	       flagstr(flags), res, (unsigned long long)p.nr_p2pdma,
	       p.slow_path_calls == P2PLAB_COUNT_UNKNOWN ? -1LL : (long long)p.slow_path_calls,
	       (unsigned long long)p.elapsed_ns);
}

static int find_pci(void)
{
	DIR *d = opendir("/sys/bus/pci/devices");
	struct dirent *e;
	char path[512], cls[32];

	while ((e = readdir(d))) {
		FILE *f;
		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/class", e->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (!fgets(cls, sizeof(cls), f))
			cls[0] = 0;
		fclose(f);
		if (strncmp(cls, "0x010802", 8))
			continue;
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/p2pmem/allocate", e->d_name);
		if (!access(path, F_OK))
			snprintf(prov, sizeof(prov), "%.63s", e->d_name);
		else
			snprintf(other, sizeof(other), "%.63s", e->d_name);
	}
	closedir(d);
	return prov[0] ? 0 : -1;
}

static long readlong(const char *bdf, const char *name)
{
	char path[512];
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/p2pmem/%s", bdf, name);
	f = fopen(path, "r");
	if (f) {
		if (fscanf(f, "%ld", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static void umem(const char *what, const char *bdf, void *addr, unsigned long len, unsigned acc)
{
	struct p2plab_umem u = { 0 };
	unsigned dom, bus, dev, fn;

	sscanf(bdf, "%x:%x:%x.%x", &dom, &bus, &dev, &fn);
	u.addr = (uintptr_t)addr;
	u.length = len;
	u.access = acc;
	u.pci_domain = dom;
	u.pci_bus = bus;
	u.pci_devfn = (dev << 3) | fn;
	if (ioctl(fd, P2PLAB_IOCTL_UMEM, &u)) {
		printf("ROW umem %-20s dev=%s ioctl errno %s\n", what, bdf, strerror(errno));
		return;
	}
	printf("ROW umem %-20s dev=%s %s result=%lld (%s) pages=%llu bus=%llu first=%#llx p2p_supported=%u\n",
	       what, bdf, acc ? "rw" : "ro", (long long)u.result,
	       u.result < 0 ? strerrorname_np(-u.result) : "ok",
	       (unsigned long long)u.nr_pages, (unsigned long long)u.nr_bus_addr,
	       (unsigned long long)u.first_dma_addr, u.p2p_supported);
}

static void bench(const char *what, void *addr, unsigned long n, unsigned flags)
{
	struct p2plab_pin p;
	unsigned long iters = n >= 16384 ? 20 : n >= 64 ? 500 : 5000, i;
	unsigned long long ns = 0, slow = 0;

	for (i = 0; i < iters; i++) {
		if (pin(addr, n, flags, &p) || p.result != (long long)n) {
			printf("BENCH %s %s n=%lu failed: %lld\n", what, flagstr(flags), n, (long long)p.result);
			return;
		}
		ns += p.elapsed_ns;
		slow += p.slow_path_calls;
	}
	printf("BENCH %-6s %-28s n=%-6lu iters=%-5lu %12.0f pages/s  (%.0f ns/call, slow_calls/call=%.1f)\n",
	       what, flagstr(flags), n, iters, (double)n * iters * 1e9 / ns, (double)ns / iters,
	       (double)slow / iters);
}

static void kernfs_checks(void)
{
	const char *dir = "/sys/kernel/" P2PLAB_SYSFS_DIR;
	char path[512];
	struct stat a, b;
	void *m;
	int f;

	snprintf(path, sizeof(path), "%s/%s", dir, P2PLAB_ATTR_MKWRITE);
	f = open(path, O_RDWR);
	if (f < 0) {
		printf("ROW kernfs mkwrite open: %s\n", strerrorname_np(errno));
		return;
	}
	m = mmap(NULL, P2PLAB_ATTR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
	printf("ROW kernfs mkwrite mmap: %s\n", m == MAP_FAILED ? strerrorname_np(errno) : "mapped");
	if (m != MAP_FAILED) {
		fstat(f, &a);
		usleep(20000);
		((volatile char *)m)[0] = 1;
		fstat(f, &b);
		printf("ROW kernfs mkwrite write: mtime %s\n",
		       (a.st_mtim.tv_sec != b.st_mtim.tv_sec || a.st_mtim.tv_nsec != b.st_mtim.tv_nsec) ? "updated" : "unchanged");
		munmap(m, P2PLAB_ATTR_SIZE);
	}
	close(f);

	snprintf(path, sizeof(path), "%s/%s", dir, P2PLAB_ATTR_PLAIN);
	for (int readfirst = 0; readfirst < 2; readfirst++) {
		f = open(path, O_RDWR);
		m = mmap(NULL, P2PLAB_ATTR_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
		if (m == MAP_FAILED) {
			printf("ROW kernfs plain mmap: %s\n", strerrorname_np(errno));
			close(f);
			return;
		}
		if (readfirst)
			(void)((volatile char *)m)[0];
		fstat(f, &a);
		usleep(20000);
		((volatile char *)m)[1] = 0x5a + readfirst;
		fstat(f, &b);
		printf("ROW kernfs plain mmap %s-first: mtime %s (%ld.%09ld -> %ld.%09ld) byte=%#x\n",
		       readfirst ? "read" : "write",
		       (a.st_mtim.tv_sec != b.st_mtim.tv_sec || a.st_mtim.tv_nsec != b.st_mtim.tv_nsec) ? "updated" : "unchanged",
		       a.st_mtim.tv_sec, a.st_mtim.tv_nsec, b.st_mtim.tv_sec, b.st_mtim.tv_nsec,
		       ((volatile unsigned char *)m)[1]);
		/* unmap so the next round faults again (the page stays cached) */
		munmap(m, P2PLAB_ATTR_SIZE);
		close(f);
	}
	/* a second mapping sees what the first wrote: same page cache */
	f = open(path, O_RDWR);
	m = mmap(NULL, P2PLAB_ATTR_SIZE, PROT_READ, MAP_SHARED, f, 0);
	printf("ROW kernfs plain remap byte=%#x\n", ((volatile unsigned char *)m)[1]);
	munmap(m, P2PLAB_ATTR_SIZE);
	{
		char c;
		printf("ROW kernfs plain read(): %s\n", pread(f, &c, 1, 0) < 0 ? strerrorname_np(errno) : "ok");
	}
	/* too big a mapping is refused */
	m = mmap(NULL, 2 * PG, PROT_READ, MAP_SHARED, f, 0);
	printf("ROW kernfs plain 2-page mmap: %s\n", m == MAP_FAILED ? strerrorname_np(errno) : "mapped (BAD)");
	close(f);
}

int main(int argc, char **argv)
{
	unsigned long npg, i;
	char path[512];
	void *p2p, *anon;
	int af;
	const unsigned flagsets[] = {
		P2PLAB_PIN_WRITE,
		P2PLAB_PIN_WRITE | P2PLAB_PIN_P2PDMA,
		P2PLAB_PIN_P2PDMA,
		P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM,
		P2PLAB_PIN_LONGTERM,
		P2PLAB_PIN_LONGTERM | P2PLAB_PIN_P2PDMA,
		P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM | P2PLAB_PIN_P2PDMA,
	};

	setvbuf(stdout, NULL, _IOLBF, 0);
	fd = open("/sys/kernel/debug/" P2PLAB_DEBUGFS_NAME, O_RDWR);
	if (fd < 0) {
		perror("open debugfs");
		return 1;
	}
	if (find_pci()) {
		printf("no p2pmem provider\n");
		return 4;
	}
	if (argc > 1 && !strcmp(argv[1], "hold")) {
		struct p2plab_pin p;
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/p2pmem/allocate", prov);
		af = open(path, O_RDWR);
		p2p = mmap(NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, af, 0);
		pin(p2p, 16, P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM | P2PLAB_PIN_P2PDMA | P2PLAB_PIN_FAST | P2PLAB_PIN_HOLD, &p);
		printf("HOLD result=%lld handle=%u, sleeping %s s then exiting without RELEASE\n", (long long)p.result, p.handle, argv[2]);
		sleep(atoi(argv[2]));
		return 0;
	}
	if (argc > 1 && !strcmp(argv[1], "leak")) {
		snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/p2pmem/allocate", prov);
		af = open(path, O_RDWR);
		p2p = mmap(NULL, 64 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, af, 0);
		for (i = 0; i < 64; i++)
			((volatile char *)p2p)[i * PG] = 1;
		for (i = 0; i < (unsigned long)atoi(argv[2]); i++) {
			struct p2plab_umem u = { .addr = (uintptr_t)p2p, .length = 64 * PG, .access = P2PLAB_UMEM_WRITE };
			struct p2plab_pin p;
			unsigned dom, bus, dev, fn;
			int fd2;

			sscanf(prov, "%x:%x:%x.%x", &dom, &bus, &dev, &fn);
			u.pci_domain = dom; u.pci_bus = bus; u.pci_devfn = (dev << 3) | fn;
			if (ioctl(fd, P2PLAB_IOCTL_UMEM, &u) || u.result != 1) {
				printf("LEAK umem failed at %lu\n", i);
				return 1;
			}
			fd2 = open("/sys/kernel/debug/" P2PLAB_DEBUGFS_NAME, O_RDWR);
			int sv = fd; fd = fd2;
			pin(p2p, 64, P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM | P2PLAB_PIN_P2PDMA | P2PLAB_PIN_HOLD, &p);
			pin(p2p, 64, P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM | P2PLAB_PIN_P2PDMA | P2PLAB_PIN_FAST | P2PLAB_PIN_HOLD, &p);
			fd = sv;
			close(fd2);
		}
		printf("LEAK done %s iterations\n", argv[2]);
		return 0;
	}
	printf("provider %s other %s available %ld size %ld\n", prov, other,
	       readlong(prov, "available"), readlong(prov, "size"));
	npg = readlong(prov, "available") / PG;
	if (npg > 16384)
		npg = 16384;
	snprintf(path, sizeof(path), "/sys/bus/pci/devices/%s/p2pmem/allocate", prov);
	af = open(path, O_RDWR);
	p2p = mmap(NULL, npg * PG, PROT_READ | PROT_WRITE, MAP_SHARED, af, 0);
	if (p2p == MAP_FAILED) {
		perror("mmap p2pmem");
		return 1;
	}
	printf("p2pmem mapped %lu pages, available now %ld\n", npg, readlong(prov, "available"));
	for (i = 0; i < npg; i++)
		((volatile char *)p2p)[i * PG] = (char)i;
	anon = mmap(NULL, 16384 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);

	for (unsigned k = 0; k < sizeof(flagsets) / sizeof(flagsets[0]); k++)
		for (unsigned fast = 0; fast <= P2PLAB_PIN_FAST; fast += P2PLAB_PIN_FAST)
			row("p2pmem", p2p, 64, flagsets[k] | fast);
	for (unsigned k = 0; k < sizeof(flagsets) / sizeof(flagsets[0]); k++)
		for (unsigned fast = 0; fast <= P2PLAB_PIN_FAST; fast += P2PLAB_PIN_FAST)
			row("anon", anon, 64, flagsets[k] | fast);
	row("p2p1pg", p2p, 1, P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM | P2PLAB_PIN_P2PDMA | P2PLAB_PIN_FAST);

	/* argument validation */
	{
		struct p2plab_pin p;
		struct p2plab_release rel = { 0 };
		long before, after;

		printf("ROW args bad flag: %s\n", pin(p2p, 1, 1 << 7, &p) ? strerrorname_np(errno) : "accepted");
		printf("ROW args unaligned: %s\n", pin((char *)p2p + 1, 1, 0, &p) ? strerrorname_np(errno) : "accepted");
		printf("ROW args zero pages: %s\n", pin(p2p, 0, 0, &p) ? strerrorname_np(errno) : "accepted");
		printf("ROW args too many: %s\n", pin(p2p, P2PLAB_PIN_MAX_PAGES + 1, 0, &p) ? strerrorname_np(errno) : "accepted");
		printf("ROW args bad cmd: %s\n", ioctl(fd, _IOWR('P', 9, struct p2plab_pin), &p) ? strerrorname_np(errno) : "accepted");
		rel.reserved = 1;
		printf("ROW args release reserved: %s\n", ioctl(fd, P2PLAB_IOCTL_RELEASE, &rel) ? strerrorname_np(errno) : "accepted");
		rel.reserved = 0;
		rel.handle = 42;
		printf("ROW args release unknown handle: %s\n", ioctl(fd, P2PLAB_IOCTL_RELEASE, &rel) ? strerrorname_np(errno) : "accepted");

		/* HOLD / RELEASE */
		before = readlong(prov, "available");
		pin(p2p, 16, P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM | P2PLAB_PIN_P2PDMA | P2PLAB_PIN_FAST | P2PLAB_PIN_HOLD, &p);
		printf("ROW hold 1: result=%lld handle=%u\n", (long long)p.result, p.handle);
		pin(p2p, 8, P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM | P2PLAB_PIN_P2PDMA | P2PLAB_PIN_HOLD, &p);
		printf("ROW hold 2: result=%lld handle=%u\n", (long long)p.result, p.handle);
		pin(anon, 4, P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM | P2PLAB_PIN_HOLD, &p);
		printf("ROW hold 3: result=%lld handle=%u\n", (long long)p.result, p.handle);
		{
			int r;
			rel.handle = 2;
			r = ioctl(fd, P2PLAB_IOCTL_RELEASE, &rel);
			printf("ROW release 2: %s released=%llu\n", r ? strerrorname_np(errno) : "ok", (unsigned long long)rel.released);
			rel.handle = 2;
			r = ioctl(fd, P2PLAB_IOCTL_RELEASE, &rel);
			printf("ROW release 2 again: %s\n", r ? strerrorname_np(errno) : "ok");
			rel.handle = 0;
			r = ioctl(fd, P2PLAB_IOCTL_RELEASE, &rel);
			printf("ROW release all: %s released=%llu\n", r ? strerrorname_np(errno) : "ok", (unsigned long long)rel.released);
			r = ioctl(fd, P2PLAB_IOCTL_RELEASE, &rel);
			printf("ROW release all (nothing held): %s released=%llu\n", r ? strerrorname_np(errno) : "ok", (unsigned long long)rel.released);
		}
		/* close releases: hold on a second fd then close it */
		{
			int fd2 = open("/sys/kernel/debug/" P2PLAB_DEBUGFS_NAME, O_RDWR), sv = fd;
			fd = fd2;
			pin(p2p, 32, P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM | P2PLAB_PIN_P2PDMA | P2PLAB_PIN_FAST | P2PLAB_PIN_HOLD, &p);
			printf("ROW hold on fd2: result=%lld handle=%u\n", (long long)p.result, p.handle);
			fd = sv;
			close(fd2);
		}
		/* cap: more than 64 holds on one file are refused */
		{
			int n = 0;
			while (!pin(anon, 1, P2PLAB_PIN_HOLD, &p) && n < 100)
				n++;
			printf("ROW hold cap: %d holds then %s\n", n, strerrorname_np(errno));
			rel.handle = 0;
			ioctl(fd, P2PLAB_IOCTL_RELEASE, &rel);
			printf("ROW hold cap released=%llu\n", (unsigned long long)rel.released);
		}
		after = readlong(prov, "available");
		printf("ROW p2pmem available before=%ld after=%ld\n", before, after);
	}

	/* UMEM */
	umem("p2pmem", prov, p2p, 64 * PG, P2PLAB_UMEM_WRITE);
	umem("p2pmem", prov, p2p, 64 * PG, 0);
	if (other[0]) {
		umem("p2pmem", other, p2p, 64 * PG, P2PLAB_UMEM_WRITE);
		umem("p2pmem", other, p2p, 64 * PG, 0);
		umem("anon", other, anon, 64 * PG, P2PLAB_UMEM_WRITE);
	}
	umem("anon", prov, anon, 64 * PG, P2PLAB_UMEM_WRITE);
	umem("p2pmem-all", prov, p2p, npg * PG, P2PLAB_UMEM_WRITE);
	{
		struct p2plab_umem u = { .addr = (uintptr_t)p2p, .length = PG, .pci_domain = 0, .pci_bus = 0xff, .pci_devfn = 0xff };
		printf("ROW umem no such device: %s\n", ioctl(fd, P2PLAB_IOCTL_UMEM, &u) ? strerrorname_np(errno) : "accepted");
	}

	kernfs_checks();

	/* throughput */
	if (argc < 2 || strcmp(argv[1], "nobench")) {
		unsigned long sizes[] = { 1, 64, 16384 };
		for (unsigned s = 0; s < 3; s++) {
			if (sizes[s] > npg)
				continue;
			bench("p2pmem", p2p, sizes[s], P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM | P2PLAB_PIN_P2PDMA | P2PLAB_PIN_FAST);
			bench("p2pmem", p2p, sizes[s], P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM | P2PLAB_PIN_P2PDMA);
			bench("p2pmem", p2p, sizes[s], P2PLAB_PIN_WRITE | P2PLAB_PIN_P2PDMA | P2PLAB_PIN_FAST);
			bench("p2pmem", p2p, sizes[s], P2PLAB_PIN_WRITE | P2PLAB_PIN_P2PDMA);
			bench("anon", anon, sizes[s], P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM | P2PLAB_PIN_FAST);
			bench("anon", anon, sizes[s], P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM);
		}
	}
	munmap(p2p, npg * PG);
	close(af);
	printf("p2pmem available at end %ld\n", readlong(prov, "available"));
	close(fd);
	return 0;
}
