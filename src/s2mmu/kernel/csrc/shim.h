/*
 * s2mmu's stand-in for the kernel environment of arch/arm64/kvm/hyp/pgtable.c.
 *
 * Force-included (gcc -include) before the kernel's own pgtable.c, kvm_pgtable.h and
 * stage2_pgtable.h, which are compiled unmodified for x86-64 userspace. Everything the
 * kernel code calls outside those files is defined here: fixed-width types, bit-field
 * helpers, READ_ONCE/WRITE_ONCE and cmpxchg on GCC atomics, RCU as a depth counter,
 * WARN_ON/DSB/ISB/TLB maintenance as recorders (implemented in glue.c), CPU capabilities
 * as variables, and the few register constants kvm_get_vtcr needs.
 * This is s2mmu's own code, written for the 6.1 and 6.12 interfaces; build.py passes
 * KG_LINUX (VERSION * 100 + PATCHLEVEL: 601 or 612) and KG_PAGE_SHIFT (12, 14 or 16:
 * the stage-2 granule is the host's PAGE_SIZE, CONFIG_ARM64_{4K,16K,64K}_PAGES).
 */
#ifndef S2MMU_KSHIM_H
#define S2MMU_KSHIM_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <limits.h>
#include <errno.h>

#if KG_PAGE_SHIFT == 12
#define CONFIG_ARM64_4K_PAGES 1
#elif KG_PAGE_SHIFT == 14
#define CONFIG_ARM64_16K_PAGES 1
#elif KG_PAGE_SHIFT == 16
#define CONFIG_ARM64_64K_PAGES 1
#else
#error "build.py passes -DKG_PAGE_SHIFT=12, 14 or 16"
#endif
#define CONFIG_ARM64_HW_AFDBM 1
#define __KVM_SHIM_USERSPACE 1

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int8_t s8;
typedef int16_t s16;
typedef int32_t s32;
typedef int64_t s64;
typedef u64 phys_addr_t;
typedef u64 kvm_pfn_t;

#define __rcu
#undef __always_inline
#define __always_inline inline __attribute__((always_inline))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define PAGE_SHIFT KG_PAGE_SHIFT
#define PAGE_SIZE (1UL << PAGE_SHIFT)
#define PTRS_PER_PTE (1 << (PAGE_SHIFT - 3))

#define BIT(n) (1UL << (n))
#define BIT_ULL(n) (1ULL << (n))
#define GENMASK(h, l) (((~0UL) << (l)) & (~0UL >> (63 - (h))))
#define GENMASK_ULL(h, l) GENMASK(h, l)
#define __bf_shf(x) (__builtin_ffsll(x) - 1)
#define FIELD_PREP(mask, val) ((((u64)(val)) << __bf_shf(mask)) & (mask))
#define FIELD_GET(mask, reg) ((((u64)(reg)) & (mask)) >> __bf_shf(mask))
#define ALIGN_DOWN(x, a) ((x) & ~((u64)(a) - 1))
#define ALIGN(x, a) (((x) + ((u64)(a) - 1)) & ~((u64)(a) - 1))
#define IS_ALIGNED(x, a) (((x) & ((u64)(a) - 1)) == 0)
#define PAGE_ALIGN(x) ALIGN(x, PAGE_SIZE)
#define IS_ENABLED(option) 0
#define min(a, b) ({ __typeof__(a) __a = (a); __typeof__(b) __b = (b); __a < __b ? __a : __b; })
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

#define READ_ONCE(x) (*(const volatile __typeof__(x) *)&(x))
#define WRITE_ONCE(x, val) do { *(volatile __typeof__(x) *)&(x) = (val); } while (0)
#define smp_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define cmpxchg(ptr, o, n) ({ __typeof__(*(ptr)) __old = (o); \
	__atomic_compare_exchange_n((ptr), &__old, (n), false, __ATOMIC_SEQ_CST, \
				    __ATOMIC_SEQ_CST); __old; })

#define MAX_ERRNO 4095
static inline void *ERR_PTR(long error) { return (void *)error; }
static inline long PTR_ERR(const void *ptr) { return (long)ptr; }
static inline bool IS_ERR(const void *ptr) { return (unsigned long)ptr >= (unsigned long)-MAX_ERRNO; }

/* Recorders (glue.c). */
void kshim_warn(const char *function, const char *condition);
void kshim_dsb(const char *domain);
void kshim_isb(void);
#define WARN_ON(c) ({ int __w = !!(c); if (__w) kshim_warn(__func__, #c); __w; })
#define WARN_ON_ONCE(c) WARN_ON(c)
#define dsb(opt) kshim_dsb(#opt)
#define isb() kshim_isb()

/* RCU: a read-side depth; frees are deferred by the glue's free_unlinked_table. */
extern int kshim_rcu_depth;
#define rcu_read_lock() (kshim_rcu_depth++)
#define rcu_read_unlock() (kshim_rcu_depth--)
#define rcu_read_lock_held() (kshim_rcu_depth > 0)
#define rcu_dereference_check(p, c) (p)
#define rcu_dereference(p) (p)

/* Capabilities: variables the harness sets. */
enum kshim_cap { ARM64_HAS_STAGE2_FWB, ARM64_KVM_HVHE, ARM64_WORKAROUND_AMPERE_AC03_CPU_38,
		 KSHIM_NR_CAPS };
extern bool kshim_caps[KSHIM_NR_CAPS];
extern bool kshim_tlb_range, kshim_bti_kernel;
#define cpus_have_final_cap(c) (kshim_caps[c])
#define cpus_have_const_cap(c) (kshim_caps[c])
#define system_supports_lpa2() false
#define system_supports_bti_kernel() (kshim_bti_kernel)
#define system_supports_tlb_range() (kshim_tlb_range)

/* ID registers, as arm64's cpufeature.h and sysreg names them (no LPA2, 48-bit PA). */
#define ID_AA64MMFR0_EL1_PARANGE_SHIFT 0
#define ID_AA64MMFR0_EL1_PARANGE_48 5
#define ID_AA64MMFR0_EL1_PARANGE_52 6
#define ID_AA64MMFR0_EL1_PARANGE_MAX ID_AA64MMFR0_EL1_PARANGE_48
#define ID_AA64MMFR1_EL1_VMIDBits_SHIFT 4
static inline unsigned int cpuid_feature_extract_unsigned_field(u64 reg, int shift)
{
	return (reg >> shift) & 0xf;
}
static inline unsigned int id_aa64mmfr0_parange_to_phys_shift(int parange)
{
	static const unsigned int shift[] = { 32, 36, 40, 42, 44, 48, 52 };
	return parange >= 0 && parange <= 6 ? shift[parange] : 52;
}
static inline unsigned int get_vmid_bits(u64 mmfr1)
{
	return cpuid_feature_extract_unsigned_field(mmfr1, ID_AA64MMFR1_EL1_VMIDBits_SHIFT) == 2 ?
	       16 : 8;
}
#define ARM64_HW_PGTABLE_LEVEL_SHIFT(n) ((PAGE_SHIFT - 3) * (4 - (n)) + 3)
#define __phys_to_pfn(p) ((u64)(p) >> PAGE_SHIFT)
#define ARM64_HW_PGTABLE_LEVELS(va_bits) (((va_bits) - 4) / (PAGE_SHIFT - 3))

/* VTCR_EL2: TG0 and the SL0 base follow the granule (kvm_arm.h's VTCR_EL2_TGRAN*). */
#if KG_PAGE_SHIFT == 12
#define VTCR_EL2_TGRAN (0UL << 14)
#define VTCR_EL2_TGRAN_SL0_BASE 2
#elif KG_PAGE_SHIFT == 14
#define VTCR_EL2_TGRAN (2UL << 14)
#define VTCR_EL2_TGRAN_SL0_BASE 3
#else
#define VTCR_EL2_TGRAN (1UL << 14)
#define VTCR_EL2_TGRAN_SL0_BASE 3
#endif
#define VTCR_EL2_T0SZ_MASK 0x3fUL
#define VTCR_EL2_T0SZ(x) (64 - (x))
#define VTCR_EL2_SL0_SHIFT 6
#define VTCR_EL2_SL0_MASK (3UL << VTCR_EL2_SL0_SHIFT)
#define VTCR_EL2_PS_SHIFT 16
#define VTCR_EL2_HA BIT(21)
#define VTCR_EL2_DS BIT(32)
#define VTCR_EL2_VS_8BIT 0UL
#define VTCR_EL2_VS_16BIT BIT(19)
#define VTCR_EL2_FLAGS (BIT(31) | (3UL << 12) | (1UL << 10) | (1UL << 8) | VTCR_EL2_TGRAN)
#define VTCR_EL2_LVLS_TO_SL0(levels) \
	((VTCR_EL2_TGRAN_SL0_BASE - (4 - (levels))) << VTCR_EL2_SL0_SHIFT)
#define VTCR_EL2_LVLS(vtcr) \
	(4 - (VTCR_EL2_TGRAN_SL0_BASE - FIELD_GET(VTCR_EL2_SL0_MASK, (vtcr))))
#define VTCR_EL2_IPA(vtcr) (64 - ((vtcr) & VTCR_EL2_T0SZ_MASK))

/* Memory types: stage-1 MAIR indices, stage-2 MemAttr (with and without FWB). */
#define MT_NORMAL 0
#define MT_DEVICE_nGnRE 4
#define MT_S2_NORMAL 0xf
#define MT_S2_NORMAL_NC 0x5
#define MT_S2_DEVICE_nGnRE 0x1
#define MT_S2_FWB_NORMAL 6
#define MT_S2_FWB_NORMAL_NC 5
#define MT_S2_FWB_DEVICE_nGnRE 1
#define PTE_S2_MEMATTR(t) ((u64)(t) << 2)
#define PAGE_S2_MEMATTR(attr, has_fwb) \
	((has_fwb) ? PTE_S2_MEMATTR(MT_S2_FWB_##attr) : PTE_S2_MEMATTR(MT_S2_##attr))

/* TLB maintenance: stage-2 helpers are recorders (glue.c); hyp stage-1 is unused. */
#define TLBI_TTL_UNKNOWN INT_MAX
#define __TLBI_RANGE_PAGES(num, scale) ((unsigned long)((num) + 1) << (5 * (scale) + 1))
#define MAX_TLBI_RANGE_PAGES __TLBI_RANGE_PAGES(31, 3)
#define __TLBI_VADDR(addr, asid) (addr)
#define __tlbi_level(op, addr, level) ((void)(addr), (void)(level))
#define __tlbi_sync_s1ish_hyp() ((void)0)
#define kvm_call_hyp(f, ...) f(__VA_ARGS__)

struct kvm_pgtable;
struct kvm_arch {
	u64 vtcr;	/* 6.1 reads the VTCR from mmu->arch */
};
struct kvm_mmu_memory_cache {
	int nobjs;
	void *objects[2048];
};
struct kvm_s2_mmu {
	u64 vmid;
	u64 vtcr;	/* 6.12 reads it from the mmu itself */
	struct kvm_arch *arch;
	struct kvm_pgtable *pgt;
	struct kvm_mmu_memory_cache split_page_cache;
};
void __kvm_tlb_flush_vmid_ipa(struct kvm_s2_mmu *mmu, phys_addr_t ipa, int level);
void __kvm_tlb_flush_vmid_ipa_nsh(struct kvm_s2_mmu *mmu, phys_addr_t ipa, int level);
void __kvm_tlb_flush_vmid_range(struct kvm_s2_mmu *mmu, phys_addr_t start, unsigned long pages);
void __kvm_tlb_flush_vmid(struct kvm_s2_mmu *mmu);

#endif
