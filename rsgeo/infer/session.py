"""Model runners behind predict-height: ONNX Runtime (CUDA or CPU) or torch.

Every runner takes *raw* tiles (the raster's own dtype, usually uint8) and a :class:`Norm`,
and normalises where the model runs: on the GPU for CUDA runners (so uint8 crosses the
bus, a quarter of float32), in place on the host for CPU runners. The arithmetic is the
same float32 sequence everywhere, ``((float32(x) * scale) - mean) / std``, so results are
identical to normalising on the host.

``runner.submit(raw, norm) -> Pending`` (``raw``: one array, or a list of parts of one
batch); ``pending.result()`` gives ``(B, out_bands, t, t)`` float32 and ``pending.release()`` hands its buffers back (call it once the result has been
used). CUDA runners return at once from ``submit`` and overlap the copy in, the model and
the copy out of consecutive batches on three CUDA streams with pinned host buffers; CPU
runners compute inside ``submit``. ``runner(x)`` runs an already normalised float32 batch
synchronously (tests, export checks).

ONNX Runtime falls back to CPU silently when CUDA cannot be used (onnxruntime#23372,
#21424). After creating a session rsgeo reads ``get_providers()``: when CUDA was asked
for explicitly and is not active, that is an error (exit 2), never a silent slow run.
"""

from __future__ import annotations

import logging
import os
import queue
from dataclasses import dataclass

import numpy as np

from rsgeo.device import resolve_device
from rsgeo.errors import InputError

log = logging.getLogger("rsgeo.infer")
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
#: dtypes sent to the device as they are; others are converted to float32 on the host first
DEVICE_DTYPES = ("uint8", "int8", "int16", "float32")


@dataclass(frozen=True)
class Norm:
    """Model input = ``(float32(raw) * scale - mean[band]) / std[band]``; keep ``out_bands``.

    ``mean`` and ``std`` are per band on the 0-255 scale; ``scale`` maps the raster's
    values onto 0-255 (1 for uint8). ``spatial``: the model returns ``(B, K, h, w)`` maps
    (False: ``(B, K)`` scores, classification).
    """

    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    out_bands: int = 1
    spatial: bool = True

    def out_shape(self, b: int, h: int, w: int) -> tuple[int, ...]:
        """The shape of a batch of ``b`` results for ``h x w`` tiles."""
        return (b, self.out_bands, h, w) if self.spatial else (b, self.out_bands)

    def host(self, raw) -> np.ndarray:
        """Normalise ``raw (B, C, h, w)`` (or a list of such parts, concatenated along B) on
        the host into a new float32 array."""
        parts = raw if isinstance(raw, (list, tuple)) else [raw]
        x = np.empty((sum(len(p) for p in parts), *parts[0].shape[1:]), np.float32)
        i = 0
        for p in parts:
            x[i:i + len(p)] = p
            i += len(p)
        if np.float32(self.scale) != 1:
            x *= np.float32(self.scale)
        x -= np.asarray(self.mean, np.float32).reshape(1, -1, 1, 1)
        x /= np.asarray(self.std, np.float32).reshape(1, -1, 1, 1)
        return x


class Done:
    """A finished result (CPU runners)."""

    def __init__(self, out: np.ndarray):
        self.out = out

    def result(self) -> np.ndarray:
        return self.out

    def release(self) -> None:
        pass


class HostRunner:
    """Any callable ``fn(normalised float32 (B, C, h, w)) -> (B, K, h, w)``, run on the host."""

    device = "cpu"

    def __init__(self, fn):
        self.fn = fn
        self.device = getattr(fn, "device", "cpu")

    def submit(self, raw, norm: Norm) -> Done:
        out = np.asarray(self.fn(norm.host(raw)), dtype=np.float32)
        return Done(out[:, :norm.out_bands])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        return self.fn(batch)


def as_runner(r):
    """``r`` if it has ``submit``, else ``r`` wrapped in :class:`HostRunner`."""
    return r if hasattr(r, "submit") else HostRunner(r)


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
    """ONNX Runtime: ``run(batch [B, C, H, W] float32) -> [B, K, H, W]``.

    A model with two inputs (change: ``pre``, ``post``) gets the first half of the bands
    as the first input and the second half as the second (see :func:`split_pair`).

    On CPU ``submit`` normalises in place on the host and runs the session. On CUDA it uses
    I/O binding: with torch's CUDA available the raw batch is copied to the GPU, normalised
    there and bound by pointer, and the output is bound to a GPU tensor (no host round trip
    inside ONNX Runtime); without torch the normalised batch is bound from the host.
    """

    def __init__(self, path, device="auto"):
        self.session = ort_session(path, device)
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.input = self.inputs[0]
        self.output = self.session.get_outputs()[0].name
        self.device = "cuda" if CUDA in self.session.get_providers() else "cpu"
        self._torch = None
        if self.device == "cuda":
            try:
                import torch

                if torch.cuda.is_available():
                    self._torch = torch
            except ImportError:
                pass

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        parts = split_pair(np.asarray(batch, np.float32), len(self.inputs))
        return self.session.run(None, {n: np.ascontiguousarray(x)
                                       for n, x in zip(self.inputs, parts)})[0]

    def submit(self, raw, norm: Norm) -> Done:
        if self.device == "cpu":
            return Done(self(norm.host(raw))[:, :norm.out_bands])
        if isinstance(raw, (list, tuple)):
            raw = np.concatenate(raw)
        return Done(self._run_bound(raw, norm))

    def _run_bound(self, raw: np.ndarray, norm: Norm) -> np.ndarray:
        binding = self.session.io_binding()
        torch = self._torch
        if torch is None:
            for n, x in zip(self.inputs, split_pair(norm.host(raw), len(self.inputs))):
                binding.bind_cpu_input(n, np.ascontiguousarray(x))
            binding.bind_output(self.output, "cuda", 0)
            self.session.run_with_iobinding(binding)
            return binding.copy_outputs_to_cpu()[0][:, :norm.out_bands]
        x = device_normalise(torch, raw, norm, torch.device("cuda"))
        b, _, h, w = x.shape
        k = self.session.get_outputs()[0].shape[1]
        k = k if isinstance(k, int) else norm.out_bands
        y = torch.empty((b, k, h, w) if norm.spatial else (b, k), dtype=torch.float32,
                        device="cuda")
        xs = [p.contiguous() for p in split_pair(x, len(self.inputs))]
        torch.cuda.current_stream().synchronize()
        for n, p in zip(self.inputs, xs):
            binding.bind_input(n, "cuda", 0, np.float32, tuple(p.shape), p.data_ptr())
        binding.bind_output(self.output, "cuda", 0, np.float32, tuple(y.shape), y.data_ptr())
        self.session.run_with_iobinding(binding)
        return y[:, :norm.out_bands].cpu().numpy()


def split_pair(x, n: int) -> list:
    """``[x]`` for one-input models; for two (change: pre, post) the two halves of the
    band axis (``x``: ``(B, 2C, h, w)`` array or tensor)."""
    if n == 1:
        return [x]
    c = x.shape[1] // 2
    return [x[:, :c], x[:, c:]]


def pair_model(model):
    """A torch module running ``model(pre, post)`` on one ``(B, 2C, h, w)`` input."""
    from torch import nn  # lazy: torch is heavy; ONNX inference runs without it

    class Pair(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(*split_pair(x, 2))

    return Pair(model)


def device_normalise(torch, raw: np.ndarray, norm: Norm, device, dev_in=None):
    """``raw`` (or its copy already on ``device``: ``dev_in``) normalised as float32 there."""
    x = dev_in if dev_in is not None else torch.from_numpy(to_device_dtype(raw)).to(device)
    x = x.to(torch.float32)
    if np.float32(norm.scale) != 1:
        x = x * float(np.float32(norm.scale))
    mean, std = _mean_std(torch, norm.mean, norm.std, str(device))
    return (x - mean) / std


_MEAN_STD: dict = {}


def _mean_std(torch, mean: tuple, std: tuple, device: str):
    """Per-band mean and std as (1, C, 1, 1) float32 tensors on ``device`` (made once)."""
    key = (mean, std, device)
    if key not in _MEAN_STD:
        _MEAN_STD[key] = tuple(torch.tensor(v, dtype=torch.float32).view(1, -1, 1, 1).to(device)
                               for v in (mean, std))
    return _MEAN_STD[key]


def to_device_dtype(raw: np.ndarray) -> np.ndarray:
    """``raw`` as is when torch can take its dtype to the device, else float32 (exact for
    16-bit integers; the same rounding the host path applies to 32-bit ones)."""
    raw = np.ascontiguousarray(raw)
    return raw if raw.dtype.name in DEVICE_DTYPES else raw.astype(np.float32)


class TorchRunner:
    """A torch model on CPU or CUDA, optional bf16 autocast (CUDA, or CPUs with AMX)."""

    def __init__(self, model, device="auto", precision="fp32", depth: int = 2):
        self.device = resolve_device(device, local_rank=False).type  # "cuda" or "cpu"
        if precision not in ("fp32", "bf16"):
            raise InputError(f"--precision must be fp32 or bf16, got {precision!r}")
        self.precision = precision
        if precision == "bf16" and self.device == "cpu" and not cpu_has_bf16():
            log.warning("--precision bf16 on a CPU without bf16 instructions (AMX or "
                        "AVX512-BF16) is emulated and usually slower than fp32")
        self.model = model.to(self.device).eval()
        self._cuda = CudaStreams(self, depth) if self.device == "cuda" else None

    def forward(self, x):
        """The model on a normalised float32 tensor already on the device."""
        import torch

        with torch.inference_mode(), torch.autocast(self.device, dtype=torch.bfloat16,
                                                    enabled=self.precision == "bf16"):
            return self.model(x)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
        return self.forward(x).float().cpu().numpy()

    def submit(self, raw, norm: Norm):
        if self._cuda is not None:
            return self._cuda.submit(raw, norm)
        import torch

        x = torch.from_numpy(norm.host(raw))
        return Done(self.forward(x)[:, :norm.out_bands].float().numpy())

    def warmup(self, shape: tuple[int, int, int, int], dtype=np.uint8) -> None:
        """One batch of zeros through the model (CUDA kernels, autotuning, allocator)."""
        norm = Norm(1.0, (0.0,) * shape[1], (1.0,) * shape[1])
        p = self.submit(np.zeros(shape, dtype), norm)
        p.result()
        p.release()


class CudaStreams:
    """Overlapped CUDA execution of a :class:`TorchRunner`: copy in, compute, copy out.

    ``slots`` sets of buffers (pinned host input, device input, pinned host output) rotate;
    ``submit`` waits for a free slot (back pressure), copies the raw batch into its pinned
    buffer and enqueues three steps on three streams joined by events: H2D copy, normalise +
    model, D2H copy. It returns at once; ``Pending.result`` waits for the copy out only.
    A slot is reused after ``release``, so results stay valid until then.
    """

    def __init__(self, runner: TorchRunner, depth: int = 2):
        import torch

        self.torch, self.runner = torch, runner
        self.dev = torch.device("cuda")
        torch.backends.cudnn.benchmark = True  # fixed tile shapes: pick the fastest kernels once
        self.s_in, self.s_run, self.s_out = (torch.cuda.Stream() for _ in range(3))
        self.free: queue.Queue = queue.Queue()
        self.slots = [dict() for _ in range(depth + 2)]
        for i in range(len(self.slots)):
            self.free.put(i)

    def _buffers(self, slot: dict, b: int, part: np.ndarray, out_shape: tuple) -> None:
        torch = self.torch
        dt = torch.from_numpy(part[:1]).dtype
        if slot.get("in_key") != (part.shape[1:], dt) or slot["pin_in"].shape[0] < b:
            n = max(b, slot["pin_in"].shape[0] if "pin_in" in slot else 0)
            slot["pin_in"] = torch.empty((n, *part.shape[1:]), dtype=dt, pin_memory=True)
            slot["dev_in"] = torch.empty((n, *part.shape[1:]), dtype=dt, device=self.dev)
            slot["in_key"] = (part.shape[1:], dt)
        if "pin_out" not in slot or slot["pin_out"].shape[1:] != out_shape[1:] \
                or slot["pin_out"].shape[0] < out_shape[0]:
            slot["pin_out"] = torch.empty(out_shape, dtype=torch.float32, pin_memory=True)

    def submit(self, raw, norm: Norm) -> "Pending":
        torch = self.torch
        parts = [to_device_dtype(p) for p in (raw if isinstance(raw, (list, tuple)) else [raw])]
        b = sum(len(p) for p in parts)
        i = self.free.get()
        slot = self.slots[i]
        try:
            out_shape = norm.out_shape(b, *parts[0].shape[2:])
            self._buffers(slot, b, parts[0], out_shape)
            pin = slot["pin_in"].numpy()
            j = 0
            for p in parts:  # the one host copy, straight into pinned memory
                pin[j:j + len(p)] = p
                j += len(p)
            with torch.cuda.stream(self.s_in):
                x = slot["dev_in"][:b]
                x.copy_(slot["pin_in"][:b], non_blocking=True)
                e_in = torch.cuda.Event()
                e_in.record(self.s_in)
            with torch.cuda.stream(self.s_run):
                self.s_run.wait_event(e_in)
                y = self.runner.forward(device_normalise(torch, None, norm, self.dev, x))
                y = y[:, :norm.out_bands].float()
                e_run = torch.cuda.Event()
                e_run.record(self.s_run)
            with torch.cuda.stream(self.s_out):
                self.s_out.wait_event(e_run)
                y.record_stream(self.s_out)
                out = slot["pin_out"][:b]
                out.copy_(y, non_blocking=True)
                e_out = torch.cuda.Event(blocking=True)  # waiters sleep instead of spinning
                e_out.record(self.s_out)
        except BaseException:
            self.free.put(i)
            raise
        return Pending(self, i, e_out, out)

    def release(self, i: int) -> None:
        self.free.put(i)


class Pending:
    """A batch in flight on the GPU: ``result()`` waits for its copy out."""

    def __init__(self, owner: CudaStreams, slot: int, event, out):
        self.owner, self.slot, self.event, self.out = owner, slot, event, out
        self._released = False

    def result(self) -> np.ndarray:
        self.event.synchronize()
        return self.out.numpy()

    def release(self) -> None:
        if not self._released:
            self._released = True
            self.event.synchronize()  # its buffers are idle before anyone reuses them
            self.owner.release(self.slot)
