"""Optional C kernels for steps that are many small PyTorch operations on CPU.

Built on first use with the system's C compiler (``build.py``); without one, or with
``TABEMBED_NATIVE=0``, every caller keeps its PyTorch path, which gives the same
values up to float rounding.
"""

from tabembed.native.build import NativeBuildError, load, reason

__all__ = ["NativeBuildError", "load", "reason"]
