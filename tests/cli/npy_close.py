#!/usr/bin/env python3
"""npy_close.py GOT.npy WANT.npy [RTOL]: exit 0 when max|got-want| <= RTOL * max|want| (default 1e-4)."""
import sys

import numpy as np

got, want = np.load(sys.argv[1]), np.load(sys.argv[2])
rtol = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
if got.shape != want.shape or got.dtype != want.dtype:
    print(f"mismatch: got {got.dtype}{list(got.shape)}, want {want.dtype}{list(want.shape)}")
    sys.exit(1)
if want.dtype == np.bool_ or np.issubdtype(want.dtype, np.integer):
    ok = np.array_equal(got, want)
    print("exact" if ok else f"{int((got != want).sum())} elements differ")
    sys.exit(0 if ok else 1)
g, w = got.astype(np.float64), want.astype(np.float64)
err = float(np.max(np.abs(g - w))) / max(float(np.max(np.abs(w))), 1e-12) if w.size else 0.0
print(f"relative error {err:.3g}")
sys.exit(0 if err <= rtol else 1)
