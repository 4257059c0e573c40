"""Which compiler torch.compile needs to build kernels for a device, and whether this machine has it.

torch.compile fails only at the first step, deep inside Inductor, when the compiler it builds kernels with is
missing. The compiler depends on the device: on a GPU, Triton builds each kernel's launcher with a C compiler
($CC, else gcc, else clang: triton/runtime/build.py); on a CPU, Inductor's kernels are C++, built with $CXX, else
g++ (torch/_inductor/config.py, cpp.cxx). So the check belongs where the trial trains, and on a local Ray the
driver can make it too, before any trial starts.
"""

from __future__ import annotations

import os
import shutil


def missing_compiler(device_type: str) -> str | None:
    """What torch.compile lacks on this machine for `device_type` ("cuda" or "cpu"), or None if nothing."""
    if device_type == "cuda":
        cc = os.environ.get("CC")
        if shutil.which(cc) if cc else (shutil.which("gcc") or shutil.which("clang")):
            return None
        return f"a C compiler for Triton's kernels ({f'$CC={cc} is not found' if cc else 'gcc or clang, or $CC'})"
    cxx = os.environ.get("CXX")
    if shutil.which(cxx or "g++"):
        return None
    return f"a C++ compiler for Inductor's CPU kernels ({f'$CXX={cxx} is not found' if cxx else 'g++, or $CXX'})"


def compile_refusal(device_type: str, where: str = "") -> str | None:
    """Why `compile: true` cannot run here (`where` names the machine), or None when it can."""
    missing = missing_compiler(device_type)
    if missing is None:
        return None
    return f"compile: true needs {missing}{where}; install one (apt-get install g++) or set compile: false"


class CompilerMissing(RuntimeError):
    """torch.compile was asked for on a machine without the compiler it needs."""
