// SPDX-License-Identifier: GPL-2.0
/*
 * Test module of the p2plab suite. Not for production use.
 *
 * Exposes the success paths of "Enable P2PDMA in Userspace RDMA" that a VM
 * cannot reach otherwise (rdma_rxe has no DMA device, so ib_umem_get() never
 * adds FOLL_PCI_P2PDMA for it). Interface in p2plab_uapi.h, in the manner of
 * mm/gup_test.c:
 *
 * /sys/kernel/debug/p2plab_test (root only), ioctls:
 *  PIN      pin_user_pages{,_fast}() with caller-chosen FOLL_* flags; reports
 *           the pinned count (or errno), how many pinned pages are P2PDMA
 *           pages, the time spent and how often the slow GUP path
 *           (__get_user_pages, counted with a kprobe) ran during the call.
 *           With P2PLAB_PIN_HOLD the pin stays with the open file until
 *           RELEASE or close.
 *  RELEASE  unpin one held pin, or all of them.
 *  UMEM     ib_umem_get() on behalf of an ib_device that is never
 *           registered and whose dma_device is a PCI function chosen by the
 *           caller: it stands in for a P2P-capable PCI HCA driver. With
 *           P2PLAB_UMEM_HOLD the umem stays with the open file, as an MR
 *           keeps it, until RELEASE or close.
 *  STATS    what every open file holds, and how many pins and umems were
 *           taken since the module was loaded (leak checks); and how often
 *           vm_insert_page() refused a P2PDMA page whose refcount was 0
 *           (counted with a kretprobe; see p2plab_insert_entry()).
 *  PGMAP    the state of the dev_pagemap behind a held pin or umem of this
 *           or another process's open file: whether its reference was killed
 *           (memunmap_pages() has begun), whether the switch to atomic mode
 *           is done, the count left and whether ->done completed. What an
 *           unbind blocked in memunmap_pages() waits for, read rather than
 *           inferred from how long it waits.
 *  CONTROL  a deliberate failure, refused with -EPERM unless the allow_crash
 *           parameter is set: P2PLAB_CONTROL_OOPS BUG()s, P2PLAB_CONTROL_HANG
 *           waits uninterruptibly forever (a D-state task for the hung-task
 *           detector), P2PLAB_CONTROL_HANG_BRIEF for a few seconds only. The
 *           suite's control.* checks prove with them that a crash or a hang
 *           costs one check, not the run, and is charged to the right check.
 *
 * The ioctl return value reports the module's own verdict on the request
 * (-EFAULT, -EINVAL for bad arguments, -ENOSPC when too much is held,
 * -ENOENT for an unknown RELEASE handle, -ENODEV when the PCI function does
 * not exist); the verdict of GUP or ib_umem_get() is returned in ->result.
 *
 * /sys/kernel/p2plab_test/, mmap-only binary attributes (read() and write()
 * fail with -EIO) backed by the page cache of their sysfs inode
 * (filemap_fault):
 *  mkwrite  its mmap installs vm_ops with ->page_mkwrite, which kernfs must
 *           refuse once it no longer wraps ->page_mkwrite itself.
 *  close    its mmap installs vm_ops with ->close, which kernfs cannot wrap
 *           and refuses on every kernel (with a WARNING once it WARNs on
 *           ->close); the mapping never exists, so ->close never runs.
 *  plain    no ->page_mkwrite; a write fault on a shared mapping must still
 *           update the file's mtime. Without ->page_mkwrite anywhere the
 *           mapping is not write-notified, so only a write fault on a page
 *           not yet mapped does that: a read first maps the page writable
 *           and a later write leaves mtime alone.
 * The pages must have a ->mapping: without the series kernfs installs its
 * own ->page_mkwrite on every mapping, and do_page_mkwrite() retries the
 * fault forever when the faulted folio has no mapping.
 */

#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/debugfs.h>
#include <linux/kobject.h>
#include <linux/kprobes.h>
#include <linux/ktime.h>
#include <linux/memremap.h>
#include <linux/mm.h>
#include <linux/module.h>
#include <linux/pagemap.h>
#include <linux/pci.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/sysfs.h>
#include <linux/uaccess.h>
#include <linux/version.h>
#include <rdma/ib_umem.h>
#include <rdma/ib_verbs.h>

#include "p2plab_uapi.h"

#define P2PLAB_PIN_ALL_FLAGS (P2PLAB_PIN_WRITE | P2PLAB_PIN_LONGTERM | \
			      P2PLAB_PIN_P2PDMA | P2PLAB_PIN_FAST | \
			      P2PLAB_PIN_HOLD)

/* Limits of what one open file may hold. */
#define P2PLAB_MAX_HOLDS 64
#define P2PLAB_MAX_HELD_PAGES P2PLAB_PIN_MAX_PAGES

/* A pin kept by P2PLAB_PIN_HOLD. */
struct p2plab_hold {
	struct list_head node;
	u32 handle;
	unsigned long nr_pages;
	struct page **pages;
};

/* A umem kept by P2PLAB_UMEM_HOLD, with the stand-in device it was got for. */
struct p2plab_umem_hold {
	struct list_head node;
	u32 handle;
	struct ib_umem *umem;
	struct ib_device *ibdev;
	struct pci_dev *pdev;
};

/* State of one open debugfs file: only the pins and umems it holds. */
struct p2plab_file {
	struct list_head file_node;	/* in p2plab_files */
	pid_t tgid;			/* of the process that opened it */
	struct mutex lock;	/* protects the fields below */
	struct list_head holds;
	struct list_head umem_holds;
	unsigned int nr_holds;
	unsigned long nr_held_pages;
	u32 next_handle;
};

/*
 * Slow-path counting: a kprobe on __get_user_pages() counts the entries made
 * by the task that is pinning. Counted pins are serialised so that one task
 * and one counter suffice.
 */
static DEFINE_MUTEX(p2plab_count_lock);

/*
 * Every open file, so that PGMAP can look at another process's holds (the
 * holder child of teardown.unbind_holder_killed). Taken before pf->lock; a
 * file leaves the list before its holds are released and it is freed.
 */
static LIST_HEAD(p2plab_files);
static DEFINE_MUTEX(p2plab_files_lock);
static struct task_struct *p2plab_count_task;
static atomic_long_t p2plab_count;

/* Module-wide counters for STATS. */
static atomic_long_t p2plab_held_pins;
static atomic_long_t p2plab_held_pages;
static atomic_long_t p2plab_held_umems;
static atomic_long_t p2plab_pins_total;
static atomic_long_t p2plab_umems_total;
static bool p2plab_kprobe_registered;

static int p2plab_kprobe_pre(struct kprobe *kp, struct pt_regs *regs)
{
	if (READ_ONCE(p2plab_count_task) == current)
		atomic_long_inc(&p2plab_count);
	return 0;
}

static struct kprobe p2plab_kprobe = {
	.symbol_name = "__get_user_pages",
	.pre_handler = p2plab_kprobe_pre,
};

/*
 * A race of the kernel under test, not of the series: free_zone_device_folio()
 * gives a P2PDMA page back to the p2pmem pool (->page_free, which is
 * p2pdma_page_free()) before it resets the page's refcount to 1, so
 * p2pmem_alloc_mmap() on another CPU can take the page from the pool in
 * between and pass it to vm_insert_page() with refcount 0, which refuses it
 * with -EINVAL (validate_page_before_insert()); the mmap fails with EINVAL.
 * A kretprobe on vm_insert_page() counts exactly those refusals: a P2PDMA
 * page with refcount 0 on entry and -EINVAL on return. The torture accepts an
 * EINVAL from that mmap only when this counter grew during it.
 */
static atomic_long_t p2plab_zero_ref_refusals;
static bool p2plab_insert_probe_registered;

static int p2plab_insert_entry(struct kretprobe_instance *ri,
			       struct pt_regs *regs)
{
	struct page *page = (struct page *)regs_get_kernel_argument(regs, 2);
	bool zero_ref = page && is_pci_p2pdma_page(page) &&
			!page_ref_count(page);

	/* Non-zero: no return probe for this call. */
	return zero_ref ? 0 : 1;
}

static int p2plab_insert_return(struct kretprobe_instance *ri,
				struct pt_regs *regs)
{
	if ((int)regs_return_value(regs) == -EINVAL)
		atomic_long_inc(&p2plab_zero_ref_refusals);
	return 0;
}

static struct kretprobe p2plab_insert_probe = {
	.kp.symbol_name = "vm_insert_page",
	.entry_handler = p2plab_insert_entry,
	.handler = p2plab_insert_return,
	.maxactive = 64,
};

static unsigned int p2plab_gup_flags(u32 flags)
{
	unsigned int gup_flags = 0;

	if (flags & P2PLAB_PIN_WRITE)
		gup_flags |= FOLL_WRITE;
	if (flags & P2PLAB_PIN_LONGTERM)
		gup_flags |= FOLL_LONGTERM;
	if (flags & P2PLAB_PIN_P2PDMA)
		gup_flags |= FOLL_PCI_P2PDMA;
	return gup_flags;
}

static long p2plab_do_pin(struct p2plab_pin *pin, struct page **pages)
{
	unsigned int gup_flags = p2plab_gup_flags(pin->flags);
	bool fast = pin->flags & P2PLAB_PIN_FAST;
	u64 start;
	long nr;

	if (!fast && mmap_read_lock_killable(current->mm))
		return -EINTR;

	start = ktime_get_ns();
	if (fast)
		nr = pin_user_pages_fast(pin->addr, pin->nr_pages, gup_flags,
					 pages);
	else
		nr = pin_user_pages(pin->addr, pin->nr_pages, gup_flags,
				    pages);
	pin->elapsed_ns = ktime_get_ns() - start;

	if (!fast)
		mmap_read_unlock(current->mm);
	return nr;
}

static int p2plab_ioctl_pin(struct p2plab_file *pf, struct p2plab_pin *pin)
{
	bool hold = pin->flags & P2PLAB_PIN_HOLD;
	struct p2plab_hold *h = NULL;
	struct page **pages;
	long nr, i;
	int ret;

	if (pin->flags & ~P2PLAB_PIN_ALL_FLAGS)
		return -EINVAL;
	if (!PAGE_ALIGNED(pin->addr) || pin->addr > ULONG_MAX)
		return -EINVAL;
	if (!pin->nr_pages || pin->nr_pages > P2PLAB_PIN_MAX_PAGES)
		return -EINVAL;

	pin->handle = 0;
	pin->nr_p2pdma = 0;
	pin->elapsed_ns = 0;
	pin->slow_path_calls = P2PLAB_COUNT_UNKNOWN;

	pages = kvcalloc(pin->nr_pages, sizeof(*pages), GFP_KERNEL);
	if (!pages)
		return -ENOMEM;

	if (hold) {
		h = kzalloc(sizeof(*h), GFP_KERNEL);
		if (!h) {
			ret = -ENOMEM;
			goto free_pages;
		}
	}

	if (mutex_lock_killable(&pf->lock)) {
		ret = -EINTR;
		goto free_hold;
	}
	if (hold && (pf->nr_holds >= P2PLAB_MAX_HOLDS ||
		     pf->nr_held_pages + pin->nr_pages >
		     P2PLAB_MAX_HELD_PAGES)) {
		ret = -ENOSPC;
		goto unlock;
	}

	if (p2plab_kprobe_registered) {
		if (mutex_lock_killable(&p2plab_count_lock)) {
			ret = -EINTR;
			goto unlock;
		}
		atomic_long_set(&p2plab_count, 0);
		WRITE_ONCE(p2plab_count_task, current);
		nr = p2plab_do_pin(pin, pages);
		WRITE_ONCE(p2plab_count_task, NULL);
		pin->slow_path_calls = atomic_long_read(&p2plab_count);
		mutex_unlock(&p2plab_count_lock);
	} else {
		nr = p2plab_do_pin(pin, pages);
	}

	pin->result = nr;
	if (nr <= 0) {
		ret = 0;
		goto unlock;
	}

	for (i = 0; i < nr; i++)
		if (is_pci_p2pdma_page(pages[i]))
			pin->nr_p2pdma++;
	atomic_long_inc(&p2plab_pins_total);

	if (!hold) {
		unpin_user_pages(pages, nr);
		ret = 0;
		goto unlock;
	}

	h->handle = pf->next_handle++;
	h->nr_pages = nr;
	h->pages = pages;
	list_add_tail(&h->node, &pf->holds);
	pf->nr_holds++;
	pf->nr_held_pages += nr;
	atomic_long_inc(&p2plab_held_pins);
	atomic_long_add(nr, &p2plab_held_pages);
	pin->handle = h->handle;
	mutex_unlock(&pf->lock);
	return 0;

unlock:
	mutex_unlock(&pf->lock);
free_hold:
	kfree(h);
free_pages:
	kvfree(pages);
	return ret;
}

static void p2plab_unpin_hold(struct p2plab_file *pf, struct p2plab_hold *h)
{
	list_del(&h->node);
	pf->nr_holds--;
	pf->nr_held_pages -= h->nr_pages;
	atomic_long_dec(&p2plab_held_pins);
	atomic_long_sub(h->nr_pages, &p2plab_held_pages);
	unpin_user_pages(h->pages, h->nr_pages);
	kvfree(h->pages);
	kfree(h);
}

static u64 p2plab_umem_holds_release(struct p2plab_file *pf, u32 handle,
				     bool *found);

static int p2plab_ioctl_release(struct p2plab_file *pf,
				struct p2plab_release *rel)
{
	struct p2plab_hold *h, *tmp;
	bool found = false;
	int ret = -ENOENT;

	if (rel->reserved)
		return -EINVAL;

	rel->released = 0;
	mutex_lock(&pf->lock);
	list_for_each_entry_safe(h, tmp, &pf->holds, node) {
		if (rel->handle && h->handle != rel->handle)
			continue;
		rel->released += h->nr_pages;
		p2plab_unpin_hold(pf, h);
		ret = 0;
	}
	rel->released += p2plab_umem_holds_release(pf, rel->handle, &found);
	if (found)
		ret = 0;
	mutex_unlock(&pf->lock);

	/* Releasing everything when nothing is held is not an error. */
	if (!rel->handle)
		ret = 0;
	return ret;
}

static void p2plab_umem_hold_free(struct p2plab_umem_hold *uh)
{
	list_del(&uh->node);
	ib_umem_release(uh->umem);
	ib_dealloc_device(uh->ibdev);
	pci_dev_put(uh->pdev);
	kfree(uh);
	atomic_long_dec(&p2plab_held_umems);
}

/*
 * Releases the held umem @handle (0: all of them); called with pf->lock held.
 * Returns the pages released and sets *found when one matched.
 */
static u64 p2plab_umem_holds_release(struct p2plab_file *pf, u32 handle,
				     bool *found)
{
	struct p2plab_umem_hold *uh, *tmp;
	u64 pages = 0;

	list_for_each_entry_safe(uh, tmp, &pf->umem_holds, node) {
		if (handle && uh->handle != handle)
			continue;
		pages += ib_umem_num_pages(uh->umem);
		p2plab_umem_hold_free(uh);
		*found = true;
	}
	return pages;
}

/* Keeps @umem with @pf; takes over the references on @ibdev and @pdev. */
static int p2plab_umem_hold_add(struct p2plab_file *pf, struct ib_umem *umem,
				struct ib_device *ibdev, struct pci_dev *pdev,
				u32 *handle)
{
	struct p2plab_umem_hold *uh = kzalloc(sizeof(*uh), GFP_KERNEL);

	if (!uh)
		return -ENOMEM;
	uh->umem = umem;
	uh->ibdev = ibdev;
	uh->pdev = pdev;
	mutex_lock(&pf->lock);
	uh->handle = pf->next_handle++;
	list_add_tail(&uh->node, &pf->umem_holds);
	mutex_unlock(&pf->lock);
	atomic_long_inc(&p2plab_held_umems);
	*handle = uh->handle;
	return 0;
}

static int p2plab_ioctl_umem(struct p2plab_file *pf, struct p2plab_umem *um)
{
	struct ib_device *ibdev;
	struct pci_dev *pdev;
	struct ib_umem *umem;
	struct scatterlist *sg;
	int ret = 0;
	int access;
	unsigned int i;

	if ((um->access & ~(P2PLAB_UMEM_WRITE | P2PLAB_UMEM_HOLD)) ||
	    um->handle)
		return -EINVAL;
	if (!um->length || um->length > (u64)P2PLAB_PIN_MAX_PAGES * PAGE_SIZE)
		return -EINVAL;
	if (um->addr > ULONG_MAX - um->length)
		return -EINVAL;
	if (um->pci_domain > 0xffff || um->pci_bus > 0xff ||
	    um->pci_devfn > 0xff)
		return -EINVAL;

	um->nr_pages = 0;
	um->nr_bus_addr = 0;
	um->first_dma_addr = 0;

	pdev = pci_get_domain_bus_and_slot(um->pci_domain, um->pci_bus,
					   um->pci_devfn);
	if (!pdev)
		return -ENODEV;

	/*
	 * Never registered: ib_umem_get() only looks at ->dma_device, and
	 * ib_dealloc_device() copes with a device that never had ports.
	 */
	ibdev = _ib_alloc_device(sizeof(*ibdev));
	if (!ibdev) {
		ret = -ENOMEM;
		goto put_pdev;
	}
	ibdev->dma_device = &pdev->dev;
	um->p2p_supported = ib_dma_pci_p2p_dma_supported(ibdev);

	access = (um->access & P2PLAB_UMEM_WRITE) ? IB_ACCESS_LOCAL_WRITE : 0;
	umem = ib_umem_get(ibdev, um->addr, um->length, access);
	if (IS_ERR(umem)) {
		um->result = PTR_ERR(umem);
		goto dealloc;
	}

	um->result = umem->sgt_append.sgt.nents;
	um->nr_pages = ib_umem_num_pages(umem);
	if (umem->sgt_append.sgt.nents)
		um->first_dma_addr = sg_dma_address(umem->sgt_append.sgt.sgl);
	for_each_sgtable_dma_sg(&umem->sgt_append.sgt, sg, i)
		if (sg_dma_is_bus_address(sg))
			um->nr_bus_addr++;
	atomic_long_inc(&p2plab_umems_total);

	if (um->access & P2PLAB_UMEM_HOLD) {
		ret = p2plab_umem_hold_add(pf, umem, ibdev, pdev, &um->handle);
		if (!ret)
			return 0;
	}
	ib_umem_release(umem);
dealloc:
	ib_dealloc_device(ibdev);
put_pdev:
	pci_dev_put(pdev);
	return ret;
}

static bool allow_crash;
module_param(allow_crash, bool, 0644);
MODULE_PARM_DESC(allow_crash, "let the CONTROL ioctl crash or hang the kernel on purpose (default: refuse)");

static DECLARE_COMPLETION(p2plab_never);

/* Not inlined, so the oops names this function in its trace. */
static noinline void p2plab_control_oops(void)
{
	pr_emerg("control: BUG() on purpose (allow_crash is set)\n");
	BUG();
}

static noinline void p2plab_control_hang(void)
{
	pr_info("control: pid %d waits in D state forever (allow_crash is set)\n", task_pid_nr(current));
	wait_for_completion(&p2plab_never);
}

/* Long enough for a 1 s hung-task timeout to report it, short enough to let the suite go on. */
static noinline void p2plab_control_hang_brief(void)
{
	pr_info("control: pid %d waits in D state for %d s (allow_crash is set)\n",
		task_pid_nr(current), P2PLAB_CONTROL_HANG_BRIEF_SECONDS);
	schedule_timeout_uninterruptible(P2PLAB_CONTROL_HANG_BRIEF_SECONDS * HZ);
}

static struct dev_pagemap *p2plab_page_pgmap(struct page *page)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 15, 0)
	return page_pgmap(page);
#else
	return page->pgmap;
#endif
}

/* The first page of @pf's hold @handle, or NULL; called with pf->lock held. */
static struct page *p2plab_held_page(struct p2plab_file *pf, u32 handle,
				     u64 *nr_pages)
{
	struct p2plab_umem_hold *uh;
	struct p2plab_hold *h;

	list_for_each_entry(h, &pf->holds, node)
		if (h->handle == handle) {
			*nr_pages = h->nr_pages;
			return h->pages[0];
		}
	list_for_each_entry(uh, &pf->umem_holds, node)
		if (uh->handle == handle && uh->umem->sgt_append.sgt.nents) {
			*nr_pages = ib_umem_num_pages(uh->umem);
			return sg_page(uh->umem->sgt_append.sgt.sgl);
		}
	return NULL;
}

/*
 * The hold keeps its pages, so their dev_pagemap cannot go away meanwhile:
 * memunmap_pages() waits in wait_for_completion(&pgmap->done) until the
 * count is zero, and these pages hold part of it.
 */
static int p2plab_ioctl_pgmap(struct p2plab_file *self, struct p2plab_pgmap *pm)
{
	struct dev_pagemap *pgmap;
	struct page *page = NULL;
	struct p2plab_file *pf;
	struct percpu_ref *ref;
	bool any = false;
	unsigned long ptr;
	int ret = 0;

	if (pm->reserved || !pm->handle)
		return -EINVAL;
	pm->state = 0;
	pm->ref_count = -1;
	pm->held_pages = 0;
	pm->page_refcount = 0;

	/* That process's first file with the handle (the holder child opens one). */
	mutex_lock(&p2plab_files_lock);
	list_for_each_entry(pf, &p2plab_files, file_node) {
		if (pm->pid ? pf->tgid != pm->pid : pf != self)
			continue;
		any = true;
		mutex_lock(&pf->lock);
		page = p2plab_held_page(pf, pm->handle, &pm->held_pages);
		if (page)
			break;
		mutex_unlock(&pf->lock);
	}
	if (!page) {
		ret = any ? -ENOENT : -ESRCH;
		goto unlock_files;
	}
	pm->page_refcount = page_ref_count(page);
	if (folio_maybe_dma_pinned(page_folio(page)))
		pm->state |= P2PLAB_PGMAP_DMA_PINNED;
	if (!is_zone_device_page(page))
		goto unlock;
	pgmap = p2plab_page_pgmap(page);
	pm->state |= P2PLAB_PGMAP_DEVICE;
	if (pgmap->type == MEMORY_DEVICE_PCI_P2PDMA)
		pm->state |= P2PLAB_PGMAP_P2PDMA;
	ref = &pgmap->ref;
	ptr = READ_ONCE(ref->percpu_count_ptr);
	if (ptr & __PERCPU_REF_DEAD)
		pm->state |= P2PLAB_PGMAP_DEAD;
	if (ptr & __PERCPU_REF_ATOMIC) {
		pm->state |= P2PLAB_PGMAP_ATOMIC;
		/* Set from the switch's start until its RCU callback folded the per-CPU counts in. */
		if (READ_ONCE(ref->data->confirm_switch))
			pm->state |= P2PLAB_PGMAP_SWITCHING;
		else
			pm->ref_count = atomic_long_read(&ref->data->count);
	}
	if (completion_done(&pgmap->done))
		pm->state |= P2PLAB_PGMAP_DONE;
unlock:
	mutex_unlock(&pf->lock);
unlock_files:
	mutex_unlock(&p2plab_files_lock);
	return ret;
}

static int p2plab_ioctl_control(__u32 what)
{
	if (!READ_ONCE(allow_crash))
		return -EPERM;
	switch (what) {
	case P2PLAB_CONTROL_OOPS:
		p2plab_control_oops();
		return 0;
	case P2PLAB_CONTROL_HANG:
		p2plab_control_hang();
		return 0;
	case P2PLAB_CONTROL_HANG_BRIEF:
		p2plab_control_hang_brief();
		return 0;
	default:
		return -EINVAL;
	}
}

static void p2plab_ioctl_stats(struct p2plab_stats *st)
{
	st->held_pins = atomic_long_read(&p2plab_held_pins);
	st->held_pages = atomic_long_read(&p2plab_held_pages);
	st->held_umems = atomic_long_read(&p2plab_held_umems);
	st->pins = atomic_long_read(&p2plab_pins_total);
	st->umems = atomic_long_read(&p2plab_umems_total);
	st->zero_ref_refusals = atomic_long_read(&p2plab_zero_ref_refusals);
	st->zero_ref_probe = p2plab_insert_probe_registered;
}

static long p2plab_ioctl(struct file *filp, unsigned int cmd,
			 unsigned long arg)
{
	struct p2plab_file *pf = filp->private_data;
	void __user *uarg = (void __user *)arg;
	union {
		struct p2plab_pin pin;
		struct p2plab_release rel;
		struct p2plab_umem umem;
		struct p2plab_stats stats;
		struct p2plab_pgmap pgmap;
	} u;
	size_t size;
	int ret;

	switch (cmd) {
	case P2PLAB_IOCTL_PIN:
		size = sizeof(u.pin);
		break;
	case P2PLAB_IOCTL_RELEASE:
		size = sizeof(u.rel);
		break;
	case P2PLAB_IOCTL_UMEM:
		size = sizeof(u.umem);
		break;
	case P2PLAB_IOCTL_PGMAP:
		size = sizeof(u.pgmap);
		break;
	case P2PLAB_IOCTL_STATS:
		p2plab_ioctl_stats(&u.stats);
		return copy_to_user(uarg, &u.stats, sizeof(u.stats)) ? -EFAULT : 0;
	case P2PLAB_IOCTL_CONTROL:
		return p2plab_ioctl_control((__u32)arg);
	default:
		return -EINVAL;
	}

	if (copy_from_user(&u, uarg, size))
		return -EFAULT;

	switch (cmd) {
	case P2PLAB_IOCTL_PIN:
		ret = p2plab_ioctl_pin(pf, &u.pin);
		break;
	case P2PLAB_IOCTL_RELEASE:
		ret = p2plab_ioctl_release(pf, &u.rel);
		break;
	case P2PLAB_IOCTL_UMEM:
		ret = p2plab_ioctl_umem(pf, &u.umem);
		break;
	case P2PLAB_IOCTL_PGMAP:
		ret = p2plab_ioctl_pgmap(pf, &u.pgmap);
		break;
	default:
		return -EINVAL;
	}
	if (ret)
		return ret;

	if (copy_to_user(uarg, &u, size))
		return -EFAULT;
	return 0;
}

static int p2plab_open(struct inode *inode, struct file *filp)
{
	struct p2plab_file *pf;

	pf = kzalloc(sizeof(*pf), GFP_KERNEL);
	if (!pf)
		return -ENOMEM;

	mutex_init(&pf->lock);
	INIT_LIST_HEAD(&pf->holds);
	INIT_LIST_HEAD(&pf->umem_holds);
	pf->next_handle = 1;
	pf->tgid = task_tgid_nr(current);
	filp->private_data = pf;
	mutex_lock(&p2plab_files_lock);
	list_add_tail(&pf->file_node, &p2plab_files);
	mutex_unlock(&p2plab_files_lock);
	return nonseekable_open(inode, filp);
}

static int p2plab_release(struct inode *inode, struct file *filp)
{
	struct p2plab_file *pf = filp->private_data;
	struct p2plab_hold *h, *tmp;
	bool found = false;

	mutex_lock(&p2plab_files_lock);
	list_del(&pf->file_node);
	mutex_unlock(&p2plab_files_lock);
	list_for_each_entry_safe(h, tmp, &pf->holds, node)
		p2plab_unpin_hold(pf, h);
	p2plab_umem_holds_release(pf, 0, &found);
	mutex_destroy(&pf->lock);
	kfree(pf);
	return 0;
}

static const struct file_operations p2plab_fops = {
	.owner = THIS_MODULE,
	.open = p2plab_open,
	.release = p2plab_release,
	.unlocked_ioctl = p2plab_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

/* Same as generic_file_vm_ops, without ->map_pages. */
static const struct vm_operations_struct p2plab_mkwrite_vm_ops = {
	.fault = filemap_fault,
	.page_mkwrite = filemap_page_mkwrite,
};

static const struct vm_operations_struct p2plab_plain_vm_ops = {
	.fault = filemap_fault,
};

/* kernfs refuses the mmap before the VMA exists, so this never runs. */
static void p2plab_close_vma(struct vm_area_struct *vma)
{
}

static const struct vm_operations_struct p2plab_close_vm_ops = {
	.fault = filemap_fault,
	.close = p2plab_close_vma,
};

static int p2plab_attr_check(const struct bin_attribute *attr,
			     struct vm_area_struct *vma)
{
	if (vma->vm_pgoff + vma_pages(vma) >
	    DIV_ROUND_UP(attr->size, PAGE_SIZE))
		return -EINVAL;
	return 0;
}

static int p2plab_mkwrite_mmap(struct file *filp, struct kobject *kobj,
			       struct bin_attribute *attr,
			       struct vm_area_struct *vma)
{
	int ret = p2plab_attr_check(attr, vma);

	if (ret)
		return ret;
	vma->vm_ops = &p2plab_mkwrite_vm_ops;
	return 0;
}

static int p2plab_close_mmap(struct file *filp, struct kobject *kobj,
			     struct bin_attribute *attr,
			     struct vm_area_struct *vma)
{
	int ret = p2plab_attr_check(attr, vma);

	if (ret)
		return ret;
	vma->vm_ops = &p2plab_close_vm_ops;
	return 0;
}

static int p2plab_plain_mmap(struct file *filp, struct kobject *kobj,
			     struct bin_attribute *attr,
			     struct vm_area_struct *vma)
{
	int ret = p2plab_attr_check(attr, vma);

	if (ret)
		return ret;
	vma->vm_ops = &p2plab_plain_vm_ops;
	return 0;
}

static struct bin_attribute p2plab_attr_mkwrite = {
	.attr = { .name = P2PLAB_ATTR_MKWRITE, .mode = 0600 },
	.size = P2PLAB_ATTR_SIZE,
	.mmap = p2plab_mkwrite_mmap,
};

static struct bin_attribute p2plab_attr_close = {
	.attr = { .name = P2PLAB_ATTR_CLOSE, .mode = 0600 },
	.size = P2PLAB_ATTR_SIZE,
	.mmap = p2plab_close_mmap,
};

static struct bin_attribute p2plab_attr_plain = {
	.attr = { .name = P2PLAB_ATTR_PLAIN, .mode = 0600 },
	.size = P2PLAB_ATTR_SIZE,
	.mmap = p2plab_plain_mmap,
};

static struct bin_attribute *p2plab_bin_attrs[] = {
	&p2plab_attr_mkwrite,
	&p2plab_attr_close,
	&p2plab_attr_plain,
	NULL,
};

static const struct attribute_group p2plab_attr_group = {
	.bin_attrs = p2plab_bin_attrs,
};

static struct dentry *p2plab_debugfs;
static struct kobject *p2plab_kobj;

static int __init p2plab_init(void)
{
	int ret;

	ret = register_kprobe(&p2plab_kprobe);
	if (ret)
		pr_warn("cannot probe %s (%d): slow-path calls not counted\n",
			p2plab_kprobe.symbol_name, ret);
	else
		p2plab_kprobe_registered = true;
	ret = register_kretprobe(&p2plab_insert_probe);
	if (ret)
		pr_warn("cannot probe %s (%d): refusals of pages with refcount 0 not counted\n",
			p2plab_insert_probe.kp.symbol_name, ret);
	else
		p2plab_insert_probe_registered = true;

	p2plab_kobj = kobject_create_and_add(P2PLAB_SYSFS_DIR, kernel_kobj);
	if (!p2plab_kobj) {
		ret = -ENOMEM;
		goto unregister;
	}

	ret = sysfs_create_group(p2plab_kobj, &p2plab_attr_group);
	if (ret)
		goto put_kobj;

	p2plab_debugfs = debugfs_create_file(P2PLAB_DEBUGFS_NAME, 0600, NULL,
					     NULL, &p2plab_fops);
	if (IS_ERR(p2plab_debugfs)) {
		ret = PTR_ERR(p2plab_debugfs);
		goto put_kobj;
	}

	pr_info("test module loaded: GUP/umem test ioctls and sysfs test attributes, not for production use\n");
	return 0;

put_kobj:
	kobject_put(p2plab_kobj);
unregister:
	if (p2plab_insert_probe_registered)
		unregister_kretprobe(&p2plab_insert_probe);
	if (p2plab_kprobe_registered)
		unregister_kprobe(&p2plab_kprobe);
	return ret;
}

static void __exit p2plab_exit(void)
{
	debugfs_remove(p2plab_debugfs);
	kobject_put(p2plab_kobj);
	if (p2plab_insert_probe_registered)
		unregister_kretprobe(&p2plab_insert_probe);
	if (p2plab_kprobe_registered)
		unregister_kprobe(&p2plab_kprobe);
}

module_init(p2plab_init);
module_exit(p2plab_exit);
MODULE_DESCRIPTION("p2plab test module: pins, ib_umem_get and kernfs mmap for the P2PDMA-in-userspace-RDMA series");
MODULE_LICENSE("GPL");
