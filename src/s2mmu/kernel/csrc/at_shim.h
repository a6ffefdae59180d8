/*
 * s2mmu's stand-in for the kernel environment of arch/arm64/kvm/at.c (Linux 6.12).
 *
 * Force-included (gcc -include) before the kernel's own at.c, which is compiled
 * unmodified for x86-64 userspace. The register-field constants come from the kernel's
 * own headers (asm/sysreg.h with the sysreg-defs.h its gen-sysreg.awk generates,
 * asm/esr.h, asm/kvm_arm.h, asm/pgtable-hwdef.h); what those headers need and what at.c
 * calls outside them is defined here:
 *
 * - a vCPU is a register file (vcpu_read_sys_reg, __vcpu_sys_reg, vcpu_write_sys_reg)
 *   and a PSTATE the harness sets (at_glue.c);
 * - kvm_read_guest, kvm_walk_nested_s2 and kvm_has_feat are callbacks into s2mmu, so
 *   at.c reads the guest's tables and L1's stage 2 exactly as the model does;
 * - the hardware fast path fails: lookup_s2_mmu finds no MMU and __kvm_at reports a
 *   failed AT (PAR_EL1.F without a fault code), so every AT takes the software walk;
 * - locks and SRCU are no-ops.
 *
 * ps_to_output_size and contiguous_bit_shift (asm/kvm_nested.h, which pulls in all of
 * kvm_host.h) are restated here from their definition in 6.12.
 * This is s2mmu's own code.
 */
#ifndef S2MMU_KAT_SHIM_H
#define S2MMU_KAT_SHIM_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <errno.h>
#include <stdlib.h>

typedef uint8_t u8;
typedef uint16_t u16;
typedef uint32_t u32;
typedef uint64_t u64;
typedef int8_t s8;
typedef int32_t s32;
typedef int64_t s64;
typedef u64 phys_addr_t;
typedef u64 pteval_t;
typedef u64 pmdval_t;
typedef u64 pudval_t;
typedef u64 p4dval_t;
typedef u64 pgdval_t;
typedef u64 __be64;
typedef u64 __le64;

#define CONFIG_ARM64_PA_BITS 48
#define CONFIG_ARM64_VA_BITS 48
#define CONFIG_PGTABLE_LEVELS 4
#define PAGE_SHIFT 12

#define __force
#define fallthrough __attribute__((__fallthrough__))
#define UL(x) x##UL
#define ULL(x) x##ULL
#define _AC(X, Y) X##Y
#define _AT(T, X) ((T)(X))
#define __stringify_1(x...) #x
#define __stringify(x...) __stringify_1(x)
#define BIT(n) (1UL << (n))
#define BIT_ULL(n) (1ULL << (n))
#define GENMASK(h, l) (((~0UL) << (l)) & (~0UL >> (63 - (h))))
#define GENMASK_ULL(h, l) GENMASK(h, l)
#define __bf_shf(x) (__builtin_ffsll(x) - 1)
#define FIELD_PREP(mask, val) ((((u64)(val)) << __bf_shf(mask)) & (mask))
#define FIELD_GET(mask, reg) ((((u64)(reg)) & (mask)) >> __bf_shf(mask))
#define min(a, b) ({ __typeof__(a) __a = (a); __typeof__(b) __b = (b); __a < __b ? __a : __b; })
#define SZ_4K 0x1000
#define SZ_16K 0x4000
#define SZ_64K 0x10000
#define BUG() abort()
#define unreachable() __builtin_unreachable()
#define WARN_ON_ONCE(c) ({ int __w = !!(c); if (__w) kat_warn(__func__); __w; })
#define be64_to_cpu(x) __builtin_bswap64(x)
#define le64_to_cpu(x) (x)
static inline s64 sign_extend64(u64 value, int index)
{
	int shift = 63 - index;

	return (s64)(value << shift) >> shift;
}

/* What asm/esr.h needs from asm/brk-imm.h (its brk decoding is never used here). */
#define CFI_BRK_IMM_MASK 0
#define CFI_BRK_IMM_BASE 0
#define UBSAN_BRK_MASK 0
#define UBSAN_BRK_IMM 0

#include <asm/sysreg.h>
#include <asm/esr.h>
#include <asm/kvm_arm.h>
#include <asm/pgtable-hwdef.h>

/* PSTATE.PAN as SPSR/CPSR holds it (uapi asm/ptrace.h). */
#define PSR_PAN_BIT 0x00400000

/* The vCPU: its EL2-visible register file, PSTATE, and the VM. */
enum kat_sysreg {
	HCR_EL2, SCTLR_EL1, TCR_EL1, TTBR0_EL1, TTBR1_EL1, MAIR_EL1, SCTLR_EL2, TCR_EL2,
	TTBR0_EL2, TTBR1_EL2, MAIR_EL2, PAR_EL1, VTCR_EL2, VTTBR_EL2, KAT_NR_SYSREGS
};
struct kvm_s2_mmu { void *arch; };
struct kvm { int srcu; int mmu_lock; struct { struct kvm_s2_mmu mmu; } arch; };
struct kvm_vcpu { struct kvm *kvm; u64 sysregs[KAT_NR_SYSREGS]; u64 cpsr; };
#define __vcpu_sys_reg(vcpu, r) ((vcpu)->sysregs[r])
#define vcpu_read_sys_reg(vcpu, r) ((vcpu)->sysregs[r])
#define vcpu_write_sys_reg(vcpu, v, r) ((vcpu)->sysregs[r] = (v))
#define vcpu_cpsr(vcpu) (&(vcpu)->cpsr)
#define vcpu_el2_e2h_is_set(vcpu) (!!((vcpu)->sysregs[HCR_EL2] & HCR_E2H))
#define vcpu_el2_tge_is_set(vcpu) (!!((vcpu)->sysregs[HCR_EL2] & HCR_TGE))

/* kvm_has_feat(kvm, ID_REG, FIELD, LIMIT) and _enum: answered by s2mmu by name. */
int kat_has_feat(const char *reg, const char *field, const char *limit, int exact);
#define kvm_has_feat(kvm, id, fld, limit) kat_has_feat(#id, #fld, #limit, 0)
#define kvm_has_feat_enum(kvm, id, fld, limit) kat_has_feat(#id, #fld, #limit, 1)
extern unsigned int kat_pa_bits, kat_ipa_limit;
#define kvm_get_pa_bits(kvm) (kat_pa_bits)
#define get_kvm_ipa_limit() (kat_ipa_limit)

/* L1's stage 2 (nested.c) and guest memory, through s2mmu. */
struct kvm_s2_trans {
	phys_addr_t output;
	unsigned long block_size;
	bool writable;
	bool readable;
	int level;
	u32 esr;
	u64 desc;
};
static inline phys_addr_t kvm_s2_trans_output(struct kvm_s2_trans *t) { return t->output; }
static inline bool kvm_s2_trans_readable(struct kvm_s2_trans *t) { return t->readable; }
static inline bool kvm_s2_trans_writable(struct kvm_s2_trans *t) { return t->writable; }
int kvm_walk_nested_s2(struct kvm_vcpu *vcpu, phys_addr_t gipa, struct kvm_s2_trans *result);
int kvm_read_guest(struct kvm *kvm, u64 gpa, void *data, unsigned long len);
void kat_warn(const char *function);

static inline unsigned int ps_to_output_size(unsigned int ps)
{
	static const unsigned int bits[] = { 32, 36, 40, 42, 44, 48 };

	return ps < 5 ? bits[ps] : 48;
}
#define contiguous_bit_shift(d, wi, l) \
	((u8)(!((d) & PTE_CONT) ? 0 : BIT((wi)->pgshift) == SZ_4K ? 4 : \
	      BIT((wi)->pgshift) == SZ_16K ? ((l) == 2 ? 5 : 7) : 5))

/* The hardware fast path: no shadow MMU, every AT instruction fails. */
#define lookup_s2_mmu(vcpu) ((struct kvm_s2_mmu *)NULL)
#define __kvm_at(op, va) (true)
#undef read_sysreg_par
#undef read_sysreg
#undef write_sysreg
#undef read_sysreg_s
#undef write_sysreg_s
#define read_sysreg_par() (SYS_PAR_EL1_F)
#define read_sysreg(r) (0UL)
#define write_sysreg(v, r) ((void)(v))
#define read_sysreg_el1(r) (0UL)
#define write_sysreg_el1(v, r) ((void)(v))
#define read_sysreg_s(r) (0UL)
#define write_sysreg_s(v, r) ((void)(v))
#define __load_stage2(mmu, arch) ((void)(mmu))
#define isb() ((void)0)
#define ALTERNATIVE(a, b, c) ""

/* Locks and SRCU. */
#define guard(kind) (void)
#define scoped_guard(kind, ...) if (1)
#define srcu_read_lock(s) 0
#define srcu_read_unlock(s, i) ((void)(i))

#endif
