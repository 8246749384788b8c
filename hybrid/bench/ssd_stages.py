"""Where an SSD's time goes: each provider's forward + backward run under torch.profiler, its GPU kernels summed
by name per call (our Triton kernels, mamba-ssm's ssd_* kernels, PyTorch's elementwise kernels around them).

Used by `python -m hybrid.bench ssd --stages L`. On the CPU (no GPU kernels) the top-level operators stand in, so the
path runs everywhere; only GPU rows say where GPU time goes.
"""
import sys

import torch


def _kernel_times(prof, device: str, calls: int) -> dict:
    """name -> microseconds per call: GPU kernels on CUDA, top-level operators on the CPU."""
    out = {}
    for e in prof.events():
        on_gpu = e.device_type == torch.autograd.DeviceType.CUDA
        if (device == "cuda" and not on_gpu) or (device != "cuda" and (on_gpu or e.cpu_parent is not None)):
            continue
        name = e.name if len(e.name) <= 60 else e.name[:57] + "..."
        out[name] = out.get(name, 0.0) + e.time_range.elapsed_us() / calls
    return out


def stage_rows(providers: dict, inputs: dict, L: int, device: str, calls: int = 3) -> list[dict]:
    """One row per (provider, kernel): op "ssd_stage", mode "fwd+bwd", the kernel's time per forward + backward
    call (ms) and its share of the provider's kernel time. `providers`: name -> f(inputs) -> y."""
    leaves = [t for t in inputs.values() if isinstance(t, torch.Tensor) and t.requires_grad]
    rows = []
    for name, fn in providers.items():
        def step():
            y = fn(inputs)
            y.backward(grad)
            for t in leaves:
                t.grad = None
        try:
            grad = torch.randn_like(fn(inputs))
            step()  # compile, autotune
            if device == "cuda":
                torch.cuda.synchronize()
            acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                            if device == "cuda" else [])
            with torch.profiler.profile(activities=acts) as prof:
                for _ in range(calls):
                    step()
                if device == "cuda":
                    torch.cuda.synchronize()
        except (torch.OutOfMemoryError, RuntimeError) as err:
            print(f"  stages {name}: failed: {type(err).__name__}: {str(err).splitlines()[0][:200]}",
                  file=sys.stderr)
            continue
        times = _kernel_times(prof, device, calls)
        total = sum(times.values())
        for kernel, us in sorted(times.items(), key=lambda kv: -kv[1]):
            rows.append(dict(op="ssd_stage", provider=name, mode="fwd+bwd", L=L, kernel=kernel,
                             median_ms=us / 1e3, share=us / total if total else None))
        rows.append(dict(op="ssd_stage", provider=name, mode="fwd+bwd", L=L, kernel="(all kernels)",
                         median_ms=total / 1e3, share=1.0))
    return rows


def print_stages(rows: list[dict], top: int = 14) -> None:
    """Per provider: its `top` slowest kernels, then the total."""
    for provider in dict.fromkeys(r["provider"] for r in rows):
        mine = [r for r in rows if r["provider"] == provider]
        print(f"stages of {provider} (L={mine[0]['L']}, fwd+bwd, per call):")
        for r in [m for m in mine if m["kernel"] != "(all kernels)"][:top] + [mine[-1]]:
            print(f"  {r['kernel']:<62} {r['median_ms']:9.3f} ms {100 * (r['share'] or 0):5.1f}%")
