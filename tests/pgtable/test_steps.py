"""Stepped operations: a plain call runs the generator; .steps exposes every access."""

from s2mmu.pgtable.steps import Gen, Step, run, stepped


@stepped
def two_reads(a: int) -> Gen[int]:
    """Read twice, return a + 1."""
    yield Step("read", a)
    yield Step("read", a + 8)
    return a + 1


def test_plain_call_returns_the_generators_result() -> None:
    assert two_reads(10) == 11


def test_steps_form_yields_each_access_before_it_happens() -> None:
    gen = two_reads.steps(16)
    assert next(gen) == Step("read", 16)
    assert next(gen) == Step("read", 24)


def test_run_drives_any_generator_to_its_return_value() -> None:
    assert run(two_reads.steps(1)) == 2


def test_stepped_keeps_the_kernel_name_and_docstring() -> None:
    assert two_reads.__name__ == "two_reads"
    assert two_reads.__doc__ == "Read twice, return a + 1."
