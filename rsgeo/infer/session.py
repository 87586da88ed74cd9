"""Model runners behind predict-height: ONNX Runtime (CUDA or CPU) or torch.

ONNX Runtime falls back to CPU silently when CUDA cannot be used (onnxruntime#23372,
#21424). After creating a session rsgeo reads ``get_providers()``: when CUDA was asked
for explicitly and is not active, that is an error (exit 2), never a silent slow run.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from rsgeo.errors import InputError

log = logging.getLogger("rsgeo.infer")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def ort_session(path: str | os.PathLike, device: str = "auto", threads: int | None = None):
    """An ORT InferenceSession on ``device`` (auto|cpu|cuda), checked after creation."""
    import onnxruntime as ort

    if device not in ("auto", "cpu", "cuda"):
        raise InputError(f"--device must be auto, cpu or cuda, got {device!r}")
    ort.set_default_logger_severity(4)  # our own one-line error replaces ORT's C++ log lines
    want_cuda = device == "cuda" or (device == "auto" and CUDA in ort.get_available_providers()
                                     and cuda_driver_present())
    providers = [CUDA, CPU] if want_cuda else [CPU]
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
    except Exception as e:
        raise InputError(f"not a loadable ONNX model ({str(e).strip().splitlines()[0][:160]})",
                         path) from None
    active = sess.get_providers()
    if device == "cuda" and CUDA not in active:
        raise InputError("CUDA was requested but ONNX Runtime could not use it (active: "
                         f"{', '.join(active)}); install onnxruntime-gpu with a matching CUDA, "
                         "or use --device cpu", path)
    log.info("ONNX Runtime providers: %s", ", ".join(active))
    return sess


def cuda_driver_present() -> bool:
    """True when an NVIDIA driver with at least one device is loadable (no torch import)."""
    import ctypes

    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    count = ctypes.c_int(0)
    return lib.cuInit(0) == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 arithmetic (AMX or AVX512-BF16 in /proc/cpuinfo).

    Measured on an AVX512-BF16 CPU without AMX (benchmarks/predict_height.py): the torch
    backend ran 1.36 Mpx/s in bf16 vs 0.92 in fp32. Without either, bf16 is emulated.
    Non-Linux systems report False (a warning, never an error).
    """
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


class OrtRunner:
    """``run(batch [B, C, H, W] float32) -> [B, K, H, W]`` with an ORT session."""

    def __init__(self, path, device="auto"):
        self.session = ort_session(path, device)
        self.input = self.session.get_inputs()[0].name
        self.device = "cuda" if CUDA in self.session.get_providers() else "cpu"

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(batch, np.float32)})[0]


class TorchRunner:
    """The same with a torch model, optional bf16 autocast (CUDA, or CPUs with AMX)."""

    def __init__(self, model, device="auto", precision="fp32"):
        import torch

        if device == "cuda" and not torch.cuda.is_available():
            raise InputError("CUDA was requested but torch sees no CUDA device; use --device cpu")
        self.device = "cuda" if device in ("cuda", "auto") and torch.cuda.is_available() else "cpu"
        if precision not in ("fp32", "bf16"):
            raise InputError(f"--precision must be fp32 or bf16, got {precision!r}")
        self.precision = precision
        if precision == "bf16" and self.device == "cpu" and not cpu_has_bf16():
            log.warning("--precision bf16 on a CPU without bf16 instructions (AMX or "
                        "AVX512-BF16) is emulated and usually slower than fp32")
        self.model = model.to(self.device).eval()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
        with torch.inference_mode(), torch.autocast(self.device, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            y = self.model(x)
        return y.float().cpu().numpy()
