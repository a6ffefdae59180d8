/*
 * s2mmu's host for the kernel's arch/arm64/kvm/at.c: one vCPU whose registers the
 * harness sets, callbacks into s2mmu for guest memory, L1's stage 2 and the VM's
 * features, and a flat API for ctypes.
 *
 * kat_at(op, va) runs the kernel's emulation of one AT instruction from virtual EL2
 * (__kvm_at_s1e01, __kvm_at_s1e2 or __kvm_at_s12, as the kernel's sys_regs.c dispatches
 * them) and returns the PAR_EL1 it wrote. The fast path always fails (at_shim.h), so
 * the answer is the software walk's. kat_op() gives the kernel's own encodings of the
 * AT instructions (OP_AT_*, asm/sysreg.h).
 */
#include <stdio.h>

void __kvm_at_s1e01(struct kvm_vcpu *vcpu, u32 op, u64 vaddr);
void __kvm_at_s1e2(struct kvm_vcpu *vcpu, u32 op, u64 vaddr);
void __kvm_at_s12(struct kvm_vcpu *vcpu, u32 op, u64 vaddr);

typedef int (*kat_read_cb)(u64 gpa, u64 *out);
typedef int (*kat_walk_cb)(u64 ipa, struct kvm_s2_trans *out);
typedef int (*kat_feat_cb)(const char *reg, const char *field, const char *limit, int exact);

static struct kvm kvm;
static struct kvm_vcpu vcpu = { .kvm = &kvm };
static kat_read_cb read_cb;
static kat_walk_cb walk_cb;
static kat_feat_cb feat_cb;
static int nwarn;
unsigned int kat_pa_bits = 48, kat_ipa_limit = 48;

void kat_warn(const char *function) { (void)function; nwarn++; }

int kat_has_feat(const char *reg, const char *field, const char *limit, int exact)
{
	return feat_cb(reg, field, limit, exact);
}

int kvm_read_guest(struct kvm *k, u64 gpa, void *data, unsigned long len)
{
	u64 v;
	int ret;

	(void)k;
	if (len != sizeof(v))
		return -EINVAL;
	ret = read_cb(gpa, &v);
	if (!ret)
		memcpy(data, &v, sizeof(v));
	return ret;
}

int kvm_walk_nested_s2(struct kvm_vcpu *v, phys_addr_t gipa, struct kvm_s2_trans *result)
{
	(void)v;
	memset(result, 0, sizeof(*result));
	return walk_cb(gipa, result);
}

void kat_set_callbacks(kat_read_cb r, kat_walk_cb w, kat_feat_cb f)
{
	read_cb = r;
	walk_cb = w;
	feat_cb = f;
}

void kat_set_limits(unsigned int pa_bits, unsigned int ipa_limit)
{
	kat_pa_bits = pa_bits;
	kat_ipa_limit = ipa_limit;
}

void kat_set_reg(int reg, u64 value) { vcpu.sysregs[reg] = value; }
u64 kat_get_reg(int reg) { return vcpu.sysregs[reg]; }
void kat_set_pstate_pan(int pan) { vcpu.cpsr = pan ? PSR_PAN_BIT : 0; }
int kat_nwarn(void) { return nwarn; }

/* The kernel's encodings of the AT instructions, in s2mmu's AtOp order. */
static const u32 ops[] = {
	OP_AT_S1E1R, OP_AT_S1E1W, OP_AT_S1E0R, OP_AT_S1E0W, OP_AT_S1E1RP, OP_AT_S1E1WP,
	OP_AT_S1E1A, OP_AT_S1E2R, OP_AT_S1E2W, OP_AT_S1E2A, OP_AT_S12E1R, OP_AT_S12E1W,
	OP_AT_S12E0R, OP_AT_S12E0W,
};

int kat_nops(void) { return sizeof(ops) / sizeof(ops[0]); }
u32 kat_op(int i) { return ops[i]; }

/* Emulate one AT instruction as the kernel's trap handlers do; return PAR_EL1. */
u64 kat_at(u32 op, u64 va)
{
	switch (op) {
	case OP_AT_S1E2R: case OP_AT_S1E2W: case OP_AT_S1E2A:
		__kvm_at_s1e2(&vcpu, op, va);
		break;
	case OP_AT_S12E1R: case OP_AT_S12E1W: case OP_AT_S12E0R: case OP_AT_S12E0W:
		__kvm_at_s12(&vcpu, op, va);
		break;
	default:
		__kvm_at_s1e01(&vcpu, op, va);
	}
	return vcpu.sysregs[PAR_EL1];
}
