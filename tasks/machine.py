"""Which machine a figure comes from: CPU model, vector extensions and core count.

The same seeded training took about 500 CPU seconds on a 2-core AMD EPYC with AVX-512 and about
1,500 on a 2-core AMD EPYC with AVX2 only, so every timing this project records (metrics/train.json,
every bench table) carries this description, and only figures from one machine are compared.
"""
import os
import platform
from pathlib import Path

EXTENSIONS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")   # what TensorFlow's CPU kernels use
NAMES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX512-BF16", "amx_tile": "AMX"}


def cpu_flags(cpuinfo: str | None = None) -> set:
    """The first processor's flags in /proc/cpuinfo (empty where there is none)."""
    return set(_fields(cpuinfo).get("flags", "").split())


def _fields(cpuinfo: str | None) -> dict:
    if cpuinfo is None:
        proc = Path("/proc/cpuinfo")
        cpuinfo = proc.read_text() if proc.exists() else ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())     # the first processor's entry
    return fields


def describe(cpuinfo: str | None = None) -> dict:
    """{"cpu": model name (family/model), "extensions": [...], "cores": n, "summary": one line}."""
    fields = _fields(cpuinfo)
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    flags = set(fields.get("flags", "").split())
    extensions = [NAMES[f] for f in EXTENSIONS if f in flags]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    summary = f"{cores} CPU cores, {name}, {'/'.join(extensions) or 'no AVX2'}"
    return {"cpu": name, "extensions": extensions, "cores": cores, "summary": summary}
