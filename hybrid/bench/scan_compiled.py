"""`python -m hybrid.bench scan_compiled [--config JSON ...] [--L N] [--kernel bwd|fwd|sum] [--dump DIR] [--out FILE]`

Compile our selective-scan kernels for an NVIDIA sm_90 GPU on any machine (no GPU needed: `triton.compile` with a
GPUTarget) exactly as the launcher would call them on the benchmark shapes (batch 8, dim 2048, N 16, bf16, the
block's layout; pointers 16-byte aligned, strides divisible by 16 marked so, unit strides specialised), and count
what the compiled code does per program: TTGIR scans, reductions, layout conversions, shared-memory round trips,
barriers; PTX warp shuffles and exponentials; registers and spills (ptxas -v); SASS instructions. No timings: these
counts pick the variants worth a GPU's time. One line per config; `--config` may be given several times (each a dict
with some of CONFIG's keys, e.g. '{"bwd_half_partials": 1}'); `--out` also writes them as long-format rows (with the
Triton version: counts change with it). `loop_instructions` is the SASS of the innermost loop, the states loop of
bwd_kernel=1 (None where the states are unrolled).
"""
import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


class _Capture:
    """Stands in for a Triton kernel: `kernel[grid](*args, **kw)` records the call instead of launching it."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def __getitem__(self, grid):
        return lambda *args, **kw: self.calls.append((args, kw))


def _launch_args(kernel: str, cfg: dict, L: int):
    """(JITFunction, positional args, keyword args) of the first launch of `kernel` on meta tensors."""
    from hybrid.bench.scan_inputs import scan_inputs
    from hybrid.kernels.selective_scan import triton as ours

    x = scan_inputs(8, 2048, 16, L, torch.bfloat16, "meta", layout="block")
    x = {k: v.detach() for k, v in x.items()}
    cfg_list = ours.make_cfg(None, cfg)
    names = ("_fwd_kernel", "_bwd_kernel", "_bwd_rolled_kernel", "_sum_partials_kernel")
    saved = {n: getattr(ours, n) for n in names}
    caps = {n: _Capture(saved[n]) for n in names}
    try:
        for n in names:
            setattr(ours, n, caps[n])
        ours._fast_exp = lambda t: True
        args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"])
        if kernel == "fwd":
            ours._fwd(*args, None, True, True, cfg_list)
        else:
            states = torch.empty(8, 2048, -(-L // cfg_list[0]), 16, device="meta")
            ours._bwd(torch.empty_like(x["u"]), None, *args, states, True, cfg_list)
    finally:
        for n in names:
            setattr(ours, n, saved[n])
        import importlib
        importlib.reload(ours)  # restores _fast_exp
    name = "_sum_partials_kernel" if kernel == "sum" else next(n for n in names[:3] if caps[n].calls)
    return saved[name], *caps[name].calls[0]


_PTR = {torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float32: "*fp32", torch.float64: "*fp64"}


def compile_sm90(fn, args, kw):
    """triton.compile the JITFunction for sm_90 with the launcher's arguments; returns the CompiledKernel."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    num_warps = kw.pop("num_warps", 4)
    maxnreg = kw.pop("maxnreg", None)
    num_stages = kw.pop("num_stages", 3)  # Triton's default
    names = fn.arg_names
    plain = {p.name for p in fn.params if p.do_not_specialize}  # the kernel's do_not_specialize
    sig, const, attrs = {}, {}, {}
    for i, (name, v) in enumerate(zip(names, list(args) + [kw.get(n) for n in names[len(args):]])):
        if name in kw or v is None or isinstance(v, bool):
            sig[name] = "constexpr"
            const[(i,)] = kw.get(name, v)
        elif isinstance(v, torch.Tensor):
            sig[name] = _PTR[v.dtype]
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in plain:
            sig[name] = "i32"
        elif v == 1:
            sig[name] = "constexpr"
            const[(i,)] = 1
        else:
            sig[name] = "i64" if abs(v) >= 2**31 else "i32"
            if v % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    src = ASTSource(fn, sig, const, attrs)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps, num_stages=num_stages,
                                                                                  maxnreg=maxnreg))


def counts(k) -> dict:
    """What the compiled kernel does, counted from its TTGIR, PTX, ptxas -v and SASS."""
    ttgir, ptx = k.asm["ttgir"], k.asm["ptx"]
    out = {
        "scans": ttgir.count('"tt.scan"'),
        "reduces": ttgir.count('"tt.reduce"'),
        "convert_layout": ttgir.count("ttg.convert_layout"),
        "local_alloc": ttgir.count("ttg.local_alloc"),
        "ptx_shfl": ptx.count("shfl.sync"),
        "ptx_bar": len(re.findall(r"\bbar\.sync|barrier\.sync", ptx)),
        "ptx_ex2": ptx.count("ex2.approx"),
        "ptx_st_shared": ptx.count("st.shared"),
    }
    from triton.backends.nvidia import compiler as nv
    bin_dir = Path(nv.__file__).parent / "bin"
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "k.ptx"
        p.write_text(ptx)
        res = subprocess.run([nv.get_ptxas(90).path, "-arch=sm_90a", "-v", str(p), "-o", str(Path(d) / "k.o")],
                             capture_output=True, text=True)
        info = res.stderr
        regs = re.search(r"Used (\d+) registers", info)
        spill = re.search(r"(\d+) bytes spill stores", info)
        out["registers"] = int(regs.group(1)) if regs else None
        out["spill_bytes"] = int(spill.group(1)) if spill else None
        sass = subprocess.run([str(bin_dir / "cuobjdump"), "-sass", str(Path(d) / "k.o")], capture_output=True,
                              text=True).stdout
    lines = re.findall(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*)", sass)
    ins = [op for _, op, _ in lines]
    # innermost loop: the shortest backward branch (BRA to an earlier address)
    loops = [int(a, 16) - int(m.group(1), 16) for a, op, rest in lines if op == "BRA"
             for m in [re.search(r"0x([0-9a-f]+)", rest)] if m and int(m.group(1), 16) < int(a, 16)]
    out["loop_instructions"] = min(loops) // 16 + 1 if len(loops) > 1 else None
    out["sass_instructions"] = len(ins)
    for op in ("SHFL", "BAR", "MUFU", "FFMA", "FMUL", "FADD", "LDG", "STG", "LDS", "STS", "FSEL"):
        out[f"sass_{op}"] = sum(1 for i in ins if i.split(".")[0] == op)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybrid.bench scan_compiled", description=__doc__.split("\n\n")[1])
    p.add_argument("--config", action="append", type=json.loads, help="CONFIG keys as JSON (repeatable)")
    p.add_argument("--kernel", choices=("bwd", "fwd", "sum"), default="bwd", help="sum: the dB/dC partials' sum")
    p.add_argument("--L", type=int, default=4096)
    p.add_argument("--dump", type=Path, help="write each config's TTGIR, PTX here")
    p.add_argument("--out", type=Path, help="also write the rows here (long-format JSON)")
    a = p.parse_args(argv)
    rows = []
    for i, cfg in enumerate(a.config or [{}]):
        fn, args, kw = _launch_args(a.kernel, cfg, a.L)
        k = compile_sm90(fn, args, dict(kw))
        c = counts(k)
        if a.dump:
            a.dump.mkdir(parents=True, exist_ok=True)
            for ext in ("ttgir", "ptx"):
                (a.dump / f"{a.kernel}_{i}.{ext}").write_text(k.asm[ext])
        rows.append(dict(op="compiled", kernel=a.kernel, config=cfg, L=a.L, target="sm_90", **c))
        print(json.dumps(rows[-1]), flush=True)
    if a.out:
        from hybrid.bench.harness import environment, write_rows
        write_rows(a.out, "scan_compiled", environment("cpu"), rows, shapes="batch 8, dim 2048, N 16, bf16, block")
    return 0


if __name__ == "__main__":
    sys.exit(main())
