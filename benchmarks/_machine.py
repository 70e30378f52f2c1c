"""What a benchmark records about the machine with every figure: CPU model, vector flags, cores, load, measured peak.

Speed figures differ several-fold between machines and with load; every script stores these beside its rows.
`peak()` measures what this process can compute right now (a few seconds of matmuls, all its threads), so a
benchmark can report its own GFLOP/s as a fraction of the machine's — a ratio that means something on any
machine and, measured side by side, under any load. Usage from a benchmark script:

    from _machine import machine
    meta = machine()   # {"cpu", "cores", "flags", "load_avg", "peak": {"fp32_gflops", "bf16_gflops", "int8_gops", ...}}
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

# torch's OpenMP threads spin while waiting by default; on cores shared with other jobs the spinning thread
# starves its partner (measured at load 25 on 2 cores: fp32 probe 29 GFLOP/s spinning, 182 passive). The
# project's torch code waits passively (embed.TorchEmbedder, the finetune engine); so do the probes.
# Read when torch loads: import this module before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__all__ = ["cpu_model", "cpu_flags", "load", "machine", "peak", "peak_fp32", "PEAK_FLAGS"]

#: The instruction-set flags that decide which kernels a CPU can run fast (Linux /proc/cpuinfo names):
#: AVX2/AVX-512 fp32 FMA; VNNI int8 dot products (AVX-512 or AVX); BF16 dot products; AMX tiles (int8, bf16).
PEAK_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_model() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """Those of `PEAK_FLAGS` the CPU reports (empty where /proc/cpuinfo is missing)."""
    from taxonomist.embed import cpu_flags as all_flags  # the reader the embedders choose their kernels by

    flags = all_flags()
    return [f for f in PEAK_FLAGS if f in flags]


def load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine(peak_seconds: float = 3.0) -> dict:
    """CPU model, flags, cores this process may use, load average (1, 5, 15 min) and the measured `peak()`.

    The peak is measured on the first call of the process and reused (scripts call this once per row written);
    `peak_seconds=0` leaves it out. For a fresh measurement beside a timed run, call `peak()` or `peak_fp32()`.
    """
    out = {"cpu": cpu_model(), "cores": _cores(), "flags": cpu_flags(), "load_avg": load()}
    if peak_seconds:
        if "peak" not in _MEASURED:
            _MEASURED["peak"] = peak(peak_seconds)
        out["peak"] = _MEASURED["peak"]
    return out


_MEASURED: dict[str, dict] = {}


# ----- measured peak ---------------------------------------------------------------------
def _best_rate(fn, flops: float, budget_s: float, min_runs: int = 3) -> float:
    """Best FLOP/s of `fn` over repeated runs within `budget_s` (after one warm-up)."""
    fn()
    best, spent, runs = float("inf"), 0.0, 0
    while runs < min_runs or spent < budget_s:
        start = time.perf_counter()
        fn()
        took = time.perf_counter() - start
        best, spent, runs = min(best, took), spent + took, runs + 1
        if runs >= 50:
            break
    return flops / best


def _torch_matmul(dtype_name: str, sizes, budget_s: float) -> float:
    import torch

    best = 0.0
    with torch.inference_mode():
        for n in sizes:
            if dtype_name == "int8":
                a = torch.randint(-128, 127, (n, n), dtype=torch.int8)
                b = torch.randint(-128, 127, (n, n), dtype=torch.int8)
                fn = lambda a=a, b=b: torch._int_mm(a, b)  # noqa: E731
            else:
                dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
                a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
                fn = lambda a=a, b=b: a @ b  # noqa: E731
            best = max(best, _best_rate(fn, 2.0 * n**3, budget_s / len(sizes)))
    return best / 1e9


def _ort_matmul_integer(sizes, budget_s: float) -> float:
    """onnxruntime's MatMulInteger (uint8 x int8 -> int32): the int8 kernel the int8 ONNX embedder runs."""
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper

    best = 0.0
    threads = _cores()
    for n in sizes:
        graph = helper.make_graph(
            [helper.make_node("MatMulInteger", ["a", "b"], ["c"])], "probe",
            [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n]), helper.make_tensor_value_info("b", TensorProto.INT8, [n, n])],
            [helper.make_tensor_value_info("c", TensorProto.INT32, [n, n])],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {"a": rng.integers(0, 255, (n, n), dtype=np.uint8), "b": rng.integers(-128, 127, (n, n), dtype=np.int8)}
        best = max(best, _best_rate(lambda s=session, f=feeds: s.run(None, f), 2.0 * n**3, budget_s / len(sizes)))
    return best / 1e9


def peak_fp32(seconds: float = 0.6, sizes=(512, 1024)) -> float:
    """A short fp32 matmul probe (GFLOP/s, torch, all threads): for interleaving with timed runs."""
    return round(_torch_matmul("fp32", sizes, seconds), 1)


def peak(seconds: float = 4.0) -> dict:
    """The machine's measured peak now: fp32, bf16 and int8 matmul GFLOP/s (GOP/s for int8), best of several sizes.

    torch matmuls on all the threads torch uses (`torch.get_num_threads()`, the cores by default); int8 is the
    faster of torch's `_int_mm` and onnxruntime's MatMulInteger, each recorded. bf16 only where the CPU has
    avx512_bf16 or AMX (elsewhere it is emulated and says nothing). A kernel that is not installed is left out.
    About `seconds` in all.
    """
    flags = set(cpu_flags())
    out: dict = {"seconds": seconds}
    probes: list[tuple[str, object]] = []
    try:
        import torch

        out["threads"] = torch.get_num_threads()
        probes.append(("fp32", lambda s: _torch_matmul("fp32", (256, 512, 1024, 2048), s)))
        if flags & {"avx512_bf16", "amx_bf16"}:
            probes.append(("bf16", lambda s: _torch_matmul("bf16", (512, 1024, 2048), s)))
        probes.append(("int8_torch", lambda s: _torch_matmul("int8", (512, 1024, 2048), s)))
    except ImportError:
        pass
    probes.append(("int8_onnxruntime", lambda s: _ort_matmul_integer((512, 1024, 2048), s)))
    share = seconds / len(probes)
    for name, probe in probes:
        try:
            out[f"{name}_{'gops' if name.startswith('int8') else 'gflops'}"] = round(probe(share), 1)
        except Exception as exc:  # a kernel missing on this build/CPU is a fact to record, not a failure
            out[f"{name}_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
    int8 = {k: v for k, v in out.items() if k.startswith("int8_") and k.endswith("_gops")}
    if int8:
        best = max(int8, key=int8.get)
        out["int8_gops"] = int8[best]
        out["int8_kernel"] = best.removeprefix("int8_").removesuffix("_gops")
    out["load_avg"] = load()
    return out
