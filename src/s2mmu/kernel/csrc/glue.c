/*
 * s2mmu's host for the kernel's pgtable.c: mm_ops over a pool of pages, recorders for
 * the events s2mmu's model records, and a flat API for ctypes.
 *
 * Table pages live in one host buffer; a table page's "physical address" is
 * pool_base + its offset in the buffer, so descriptor words can be compared with the
 * model's at the same addresses. Other addresses (guest memory) map one to one and are
 * never dereferenced. Pages come only from the memcaches the harness fills (with the
 * pages the model's pool handed out) and from kg_init's PGD address, so both sides
 * allocate the same pages in the same order. An empty memcache WARNs and falls back to
 * an atomic allocation, as kvm_mmu_memory_cache_alloc does; the pages it gets are the
 * ones the harness names beforehand (the next the model's page pool would hand out).
 * free_unlinked_table is deferred to the end of the operation (RCU); the harness
 * compares frees as an unordered list for that reason.
 *
 * kg_walk drives kvm_pgtable_walk with a recording visitor (each call's visit, level,
 * address, descriptor and walk flags), which can return an error or clear the entry at
 * a chosen call; kg_get_leaf calls kvm_pgtable_get_leaf.
 *
 * KG_LINUX selects the kernel's interfaces: 612 (6.12: walk flags on map, RCU-deferred
 * table frees, test_clear_young, split) or 601 (6.1: no flags, no deferred frees,
 * mkold/is_young for one page, no split).
 */
#include <stdlib.h>
#include <stdio.h>
#include <asm/kvm_pgtable.h>

#ifndef KG_LINUX
#error "build.py passes -DKG_LINUX=601 or 612"
#endif

int kshim_rcu_depth;
bool kshim_caps[KSHIM_NR_CAPS];
bool kshim_tlb_range, kshim_bti_kernel;

enum kg_event_kind {
	KG_TLBI_IPA = 1, KG_TLBI_IPA_NSH, KG_TLBI_RANGE, KG_TLBI_VMID, KG_DSB, KG_ISB,
	KG_DCACHE, KG_ICACHE, KG_ALLOC, KG_FREE, KG_WARN, KG_BAD_ADDR,
};

struct kg_event {
	int kind;
	int level;
	u64 a;
	u64 b;
	char text[64];
};

#define KG_MAX_EVENTS 65536
static struct kg_event events[KG_MAX_EVENTS];
static int nevents;

static unsigned char *pool;
static u64 pool_base, pool_pages;
static int *refcount;
static u64 exact_pa;
static struct kvm_s2_mmu mmu;
static struct kvm_arch arch;
static struct kvm_pgtable pgt;
static struct kvm_mmu_memory_cache map_cache;

#if KG_LINUX >= 612
#define KG_MAX_DEFERRED 4096
static struct { void *addr; s8 level; } deferred[KG_MAX_DEFERRED];
static int ndeferred;
#endif

static struct kg_event *record(int kind, u64 a, u64 b, int level)
{
	struct kg_event *e = &events[nevents < KG_MAX_EVENTS ? nevents++ : KG_MAX_EVENTS - 1];

	e->kind = kind;
	e->a = a;
	e->b = b;
	e->level = level;
	e->text[0] = 0;
	return e;
}

void kshim_warn(const char *function, const char *condition)
{
	struct kg_event *e = record(KG_WARN, 0, 0, 0);

	/* The memcache WARN is kvm_mmu_memory_cache_alloc's (inlined here). */
	if (!strcmp(function, "kg_zalloc_page"))
		function = "kvm_mmu_memory_cache_alloc";
	snprintf(e->text, sizeof(e->text), "%s", function);
	(void)condition;
}

void kshim_dsb(const char *domain)
{
	struct kg_event *e = record(KG_DSB, 0, 0, 0);

	snprintf(e->text, sizeof(e->text), "%s", domain);
}

void kshim_isb(void) { record(KG_ISB, 0, 0, 0); }

void __kvm_tlb_flush_vmid_ipa(struct kvm_s2_mmu *m, phys_addr_t ipa, int level)
{
	record(KG_TLBI_IPA, m->vmid, ipa, level);
}

void __kvm_tlb_flush_vmid_ipa_nsh(struct kvm_s2_mmu *m, phys_addr_t ipa, int level)
{
	record(KG_TLBI_IPA_NSH, m->vmid, ipa, level);
}

void __kvm_tlb_flush_vmid_range(struct kvm_s2_mmu *m, phys_addr_t start, unsigned long pages)
{
	struct kg_event *e = record(KG_TLBI_RANGE, m->vmid, start, 0);

	snprintf(e->text, sizeof(e->text), "%lu", pages);
}

void __kvm_tlb_flush_vmid(struct kvm_s2_mmu *m) { record(KG_TLBI_VMID, m->vmid, 0, 0); }

static bool in_pool(u64 pa) { return pa >= pool_base && pa < pool_base + pool_pages * PAGE_SIZE; }

static void *kg_phys_to_virt(phys_addr_t pa)
{
	return in_pool(pa) ? pool + (pa - pool_base) : (void *)pa;
}

static phys_addr_t kg_virt_to_phys(void *addr)
{
	unsigned char *p = addr;

	if (p >= pool && p < pool + pool_pages * PAGE_SIZE)
		return pool_base + (u64)(p - pool);
	return (phys_addr_t)addr;
}

static long page_index(void *addr)
{
	u64 pa = kg_virt_to_phys(addr) & ~(PAGE_SIZE - 1);

	if (!in_pool(pa)) {
		record(KG_BAD_ADDR, pa, 0, 0);
		return -1;
	}
	return (long)((pa - pool_base) >> PAGE_SHIFT);
}

/* Pages an atomic allocation returns, in order (kg_set_fallback). */
#define KG_MAX_FALLBACK 8200
static u64 fallback[KG_MAX_FALLBACK];
static int nfallback, next_fallback;

static void *kg_atomic_page(void)
{
	if (next_fallback >= nfallback)
		return NULL;
	return kg_phys_to_virt(fallback[next_fallback++]);
}

/* kvm_mmu_memory_cache_alloc: an empty cache WARNs, then allocates with GFP_ATOMIC. */
static void *kg_zalloc_page(void *arg)
{
	struct kvm_mmu_memory_cache *mc = arg;
	void *p;

	if (WARN_ON(!mc->nobjs))
		p = kg_atomic_page();
	else
		p = mc->objects[--mc->nobjs];
	if (!p) {
		record(KG_BAD_ADDR, 0, 0, 0);	/* BUG_ON(!p) */
		return NULL;
	}
	memset(p, 0, PAGE_SIZE);
	refcount[page_index(p)] = 1;
	record(KG_ALLOC, kg_virt_to_phys(p), 0, 0);
	return p;
}

static void *kg_zalloc_pages_exact(size_t size)
{
	void *p = kg_phys_to_virt(exact_pa);
	size_t off;

	if (!in_pool(exact_pa))
		return NULL;
	memset(p, 0, size);
	for (off = 0; off < size; off += PAGE_SIZE) {
		refcount[page_index((char *)p + off)] = 1;
		record(KG_ALLOC, exact_pa + off, 0, 0);
	}
	return p;
}

static void free_page_at(void *addr)
{
	long i = page_index(addr);

	if (i < 0)
		return;
	refcount[i] = 0;
	memset(pool + i * PAGE_SIZE, 0, PAGE_SIZE);
	record(KG_FREE, pool_base + (u64)i * PAGE_SIZE, 0, 0);
}

static void kg_free_pages_exact(void *addr, size_t size)
{
	size_t off;

	for (off = 0; off < size; off += PAGE_SIZE)
		free_page_at((char *)addr + off);
}

#if KG_LINUX >= 612
static void kg_free_unlinked_table(void *addr, s8 level)
{
	if (ndeferred < KG_MAX_DEFERRED) {
		deferred[ndeferred].addr = addr;
		deferred[ndeferred].level = level;
		ndeferred++;
	}
}
#endif

static void kg_get_page(void *addr)
{
	long i = page_index(addr);

	if (i >= 0)
		refcount[i]++;
}

static void kg_put_page(void *addr)
{
	long i = page_index(addr);

	if (i < 0)
		return;
	if (refcount[i] == 1)
		free_page_at(addr);
	else
		refcount[i]--;
}

static int kg_page_count(void *addr)
{
	long i = page_index(addr);

	return i < 0 ? 0 : refcount[i];
}

static void kg_dcache(void *addr, size_t size)
{
	if (!kshim_caps[ARM64_HAS_STAGE2_FWB])
		record(KG_DCACHE, kg_virt_to_phys(addr), size, 0);
}

static bool kg_dic;

static void kg_icache(void *addr, size_t size)
{
	if (kg_dic)
		record(KG_ISB, 0, 0, 0);
	else
		record(KG_ICACHE, kg_virt_to_phys(addr), size, 0);
}

static struct kvm_pgtable_mm_ops mm_ops = {
	.zalloc_page = kg_zalloc_page,
	.zalloc_pages_exact = kg_zalloc_pages_exact,
	.free_pages_exact = kg_free_pages_exact,
#if KG_LINUX >= 612
	.free_unlinked_table = kg_free_unlinked_table,
#endif
	.get_page = kg_get_page,
	.put_page = kg_put_page,
	.page_count = kg_page_count,
	.phys_to_virt = kg_phys_to_virt,
	.virt_to_phys = kg_virt_to_phys,
	.dcache_clean_inval_poc = kg_dcache,
	.icache_inval_pou = kg_icache,
};

/* End of an operation: the RCU grace period passes, deferred tables are freed. */
static void kg_grace_period(void)
{
#if KG_LINUX >= 612
	int i;

	for (i = 0; i < ndeferred; i++)
		kvm_pgtable_stage2_free_unlinked(&mm_ops, deferred[i].addr, deferred[i].level);
	ndeferred = 0;
#endif
}

/* ---- Flat API for ctypes ---- */

int kg_version(void) { return KG_LINUX; }

int kg_page_shift(void) { return PAGE_SHIFT; }

u64 kg_get_vtcr(u64 mmfr0, u64 mmfr1, u32 ipa_bits) { return kvm_get_vtcr(mmfr0, mmfr1, ipa_bits); }

int kg_init(u64 base, u64 npages, u64 mmfr0, u64 mmfr1, u32 ipa_bits, u64 vmid, u64 pgd_pa,
	    int fwb, int tlb_range, int dic, int hw_afdbm)
{
	free(pool);
	free(refcount);
	pool = aligned_alloc(PAGE_SIZE, npages * PAGE_SIZE);
	refcount = calloc(npages, sizeof(*refcount));
	if (!pool || !refcount)
		return -ENOMEM;
	memset(pool, 0, npages * PAGE_SIZE);
	pool_base = base;
	pool_pages = npages;
	nevents = 0;
	nfallback = next_fallback = 0;
#if KG_LINUX >= 612
	ndeferred = 0;
#endif
	kshim_rcu_depth = 0;
	memset(&mmu, 0, sizeof(mmu));
	memset(&pgt, 0, sizeof(pgt));
	map_cache.nobjs = 0;
	kshim_caps[ARM64_HAS_STAGE2_FWB] = fwb;
	kshim_caps[ARM64_WORKAROUND_AMPERE_AC03_CPU_38] = !hw_afdbm;
	kshim_tlb_range = tlb_range;
	kg_dic = dic;
	exact_pa = pgd_pa;
	mmu.vmid = vmid;
	mmu.vtcr = kvm_get_vtcr(mmfr0, mmfr1, ipa_bits);
	arch.vtcr = mmu.vtcr;
	mmu.arch = &arch;
	mmu.pgt = &pgt;
	return kvm_pgtable_stage2_init(&pgt, &mmu, &mm_ops);
}

static struct kvm_mmu_memory_cache *cache(int which)
{
	return which ? &mmu.split_page_cache : &map_cache;
}

/* Replace a memcache's pages (pool addresses, popped from the end); they read as zero. */
int kg_set_memcache(int which, const u64 *pas, int n)
{
	struct kvm_mmu_memory_cache *mc = cache(which);
	int i;

	for (i = 0; i < mc->nobjs; i++)
		refcount[page_index(mc->objects[i])] = 0;
	if (n > (int)(sizeof(mc->objects) / sizeof(mc->objects[0])))
		return -E2BIG;
	for (i = 0; i < n; i++) {
		if (!in_pool(pas[i]))
			return -EINVAL;
		mc->objects[i] = kg_phys_to_virt(pas[i]);
		memset(mc->objects[i], 0, PAGE_SIZE);
		refcount[page_index(mc->objects[i])] = 1;
	}
	mc->nobjs = n;
	return 0;
}

/* The pages the next atomic allocations return (the model's pool order). */
int kg_set_fallback(const u64 *pas, int n)
{
	int i;

	if (n > KG_MAX_FALLBACK)
		return -E2BIG;
	for (i = 0; i < n; i++) {
		if (!in_pool(pas[i]))
			return -EINVAL;
		fallback[i] = pas[i];
	}
	nfallback = n;
	next_fallback = 0;
	return 0;
}

int kg_get_memcache(int which, u64 *out, int max)
{
	struct kvm_mmu_memory_cache *mc = cache(which);
	int i;

	for (i = 0; i < mc->nobjs && i < max; i++)
		out[i] = kg_virt_to_phys(mc->objects[i]);
	return mc->nobjs;
}

#define KG_OP(body) ({ long __r = (body); kg_grace_period(); __r; })

long kg_map(u64 addr, u64 size, u64 phys, u64 prot, u64 flags)
{
#if KG_LINUX >= 612
	return KG_OP(kvm_pgtable_stage2_map(&pgt, addr, size, phys, prot, &map_cache, flags));
#else
	return flags ? -ENOSYS : kvm_pgtable_stage2_map(&pgt, addr, size, phys, prot, &map_cache);
#endif
}

long kg_set_owner(u64 addr, u64 size, u8 owner)
{
	return KG_OP(kvm_pgtable_stage2_set_owner(&pgt, addr, size, &map_cache, owner));
}

long kg_unmap(u64 addr, u64 size) { return KG_OP(kvm_pgtable_stage2_unmap(&pgt, addr, size)); }

long kg_wrprotect(u64 addr, u64 size)
{
	return KG_OP(kvm_pgtable_stage2_wrprotect(&pgt, addr, size));
}

u64 kg_mkyoung(u64 addr) { return (u64)KG_OP((long)kvm_pgtable_stage2_mkyoung(&pgt, addr)); }

long kg_test_clear_young(u64 addr, u64 size, int mkold)
{
#if KG_LINUX >= 612
	return KG_OP(kvm_pgtable_stage2_test_clear_young(&pgt, addr, size, mkold));
#else
	/* One page: mkold returns the old leaf (its AF is bit 10), is_young tests it. */
	if (size != PAGE_SIZE)
		return -ENOSYS;
	return mkold ? !!(kvm_pgtable_stage2_mkold(&pgt, addr) & BIT(10)) :
		       kvm_pgtable_stage2_is_young(&pgt, addr);
#endif
}

long kg_relax_perms(u64 addr, u64 prot)
{
	return KG_OP(kvm_pgtable_stage2_relax_perms(&pgt, addr, prot));
}

long kg_flush(u64 addr, u64 size) { return KG_OP(kvm_pgtable_stage2_flush(&pgt, addr, size)); }

long kg_split(u64 addr, u64 size)
{
#if KG_LINUX >= 612
	return KG_OP(kvm_pgtable_stage2_split(&pgt, addr, size, &mmu.split_page_cache));
#else
	return -ENOSYS;
#endif
}

/* An unlinked table for the level-`level` block at phys, from the map memcache: its
 * address, or a negative errno (6.1 has no kvm_pgtable_stage2_create_unlinked). */
long kg_create_unlinked(u64 phys, int level, u64 prot, int force_pte)
{
#if KG_LINUX >= 612
	kvm_pte_t *p;
	long ret;

	p = kvm_pgtable_stage2_create_unlinked(&pgt, phys, level, prot, &map_cache, force_pte);
	ret = IS_ERR(p) ? PTR_ERR(p) : (long)kg_virt_to_phys(p);
	return KG_OP(ret);
#else
	return -ENOSYS;
#endif
}

/* ---- kvm_pgtable_walk with a recording visitor ---- */

struct kg_visit {
	int visit;
	int level;
	u64 addr;
	u64 old;
	u64 flags;
};

#define KG_MAX_VISITS 65536
static struct kg_visit visits[KG_MAX_VISITS];
static int nvisits, ncalls, visit_fail_at, visit_fail_ret, visit_zap_at;
static u64 visit_flags;

static int kg_visit(int visit, int level, u64 addr, kvm_pte_t *ptep, u64 old, u64 flags)
{
	int n = ++ncalls;

	if (nvisits < KG_MAX_VISITS)
		visits[nvisits++] = (struct kg_visit){ visit, level, addr, old, flags };
	if (n == visit_zap_at)
		WRITE_ONCE(*ptep, 0);
	return n == visit_fail_at ? visit_fail_ret : 0;
}

#if KG_LINUX >= 612
static int kg_visitor(const struct kvm_pgtable_visit_ctx *ctx, enum kvm_pgtable_walk_flags visit)
{
	return kg_visit(visit, ctx->level, ctx->addr, ctx->ptep, ctx->old, ctx->flags);
}
#else
/* 6.1's visitors get the entry's address and read it themselves. */
static int kg_visitor(u64 addr, u64 end, u32 level, kvm_pte_t *ptep,
		      enum kvm_pgtable_walk_flags flag, void * const arg)
{
	return kg_visit(flag, level, addr, ptep, READ_ONCE(*ptep), visit_flags);
}
#endif

/* kvm_pgtable_walk(addr, size) with flags; the visitor returns fail_ret at call fail_at
 * (1-based; 0: never) and clears the entry at call zap_at (a plain store). */
long kg_walk(u64 addr, u64 size, u64 flags, int fail_at, int fail_ret, int zap_at)
{
	struct kvm_pgtable_walker walker = {
		.cb = kg_visitor,
		.arg = NULL,
		.flags = flags,
	};

	nvisits = ncalls = 0;
	visit_fail_at = fail_at;
	visit_fail_ret = fail_ret;
	visit_zap_at = zap_at;
	visit_flags = flags;
	return KG_OP(kvm_pgtable_walk(&pgt, addr, size, &walker));
}

int kg_nvisits(void) { return nvisits; }
const struct kg_visit *kg_visits(void) { return visits; }

/* kvm_pgtable_get_leaf: its return value; the entry and level through out. */
long kg_get_leaf(u64 addr, u64 *pte, int *level)
{
#if KG_LINUX >= 612
	s8 lvl = 0;
#else
	u32 lvl = 0;
#endif
	kvm_pte_t p = 0;
	long ret = KG_OP(kvm_pgtable_get_leaf(&pgt, addr, &p, &lvl));

	*pte = p;
	*level = lvl;
	return ret;
}

u64 kg_pgd(void) { return kg_virt_to_phys(pgt.pgd); }
int kg_start_level(void) { return pgt.start_level; }
int kg_nevents(void) { return nevents; }
const struct kg_event *kg_events(void) { return events; }
void kg_clear_events(void) { nevents = 0; }
int kg_rcu_depth(void) { return kshim_rcu_depth; }

/* Copy the pages with a non-zero refcount: their addresses, counts and contents. */
int kg_live_pages(u64 *pas, int *counts, u64 *words, int max)
{
	u64 i;
	int n = 0;

	for (i = 0; i < pool_pages && n < max; i++) {
		if (!refcount[i])
			continue;
		pas[n] = pool_base + i * PAGE_SIZE;
		counts[n] = refcount[i];
		memcpy(words + (u64)n * PTRS_PER_PTE, pool + i * PAGE_SIZE, PAGE_SIZE);
		n++;
	}
	return n;
}
