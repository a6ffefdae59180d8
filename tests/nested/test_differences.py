"""The one list of places where KVM's answer is not the architecture's."""

from s2mmu.nested.differences import BY_NAME, DIFFERENCES, S12_ATTRIBUTE_DIFFERENCES


def test_names_are_unique_and_indexed():
    everything = DIFFERENCES + S12_ATTRIBUTE_DIFFERENCES
    assert len(BY_NAME) == len(everything)


def test_each_difference_cites_kernel_code_and_gives_both_answers():
    for d in DIFFERENCES + S12_ATTRIBUTE_DIFFERENCES:
        assert d.where.startswith(("nested.c", "at.c")), d.name
        assert d.architecture != d.kvm and d.reason, d.name


def test_the_level_of_a_stage2_fault_on_a_stage1_walk_is_listed():
    d = BY_NAME["AT_S2_FAULT_LEVEL"]
    assert "stage-1 level" in d.kvm and "stage-2 walk's level" in d.architecture
