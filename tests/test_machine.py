"""The machine description that every timing carries."""
from tasks import machine

AVX2_ONLY = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 23
model\t\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx avx2 fma
processor\t: 1
model name\t: something else
flags\t\t: avx512f
"""


def test_names_the_model_and_the_vector_extensions_of_the_first_cpu():
    d = machine.describe(AVX2_ONLY)
    assert d["cpu"] == "AMD EPYC (family 23, model 1)"
    assert d["extensions"] == ["AVX2"]                      # the second entry's avx512f is not read
    assert d["summary"] == f"{d['cores']} CPU cores, AMD EPYC (family 23, model 1), AVX2"


def test_avx512_and_amx_are_named():
    d = machine.describe("model name\t: Xeon\nflags\t\t: avx2 avx512f avx512_bf16 amx_tile\n")
    assert d["extensions"] == ["AVX2", "AVX-512", "AVX512-BF16", "AMX"]
    assert d["cores"] >= 1 and d["summary"].endswith("Xeon, AVX2/AVX-512/AVX512-BF16/AMX")
