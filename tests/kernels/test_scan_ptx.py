"""The inline PTX of the rolled scan backward (bwd_asm), run on a 32-lane emulator of the few instructions it uses.

Triton's interpreter cannot run inline assembly, so the compiled-only pieces are checked here on the CPU: the exact PTX
strings the kernel ships, executed lane by lane in lockstep (shuffles read the other lanes' registers before any lane
writes), with the tile layout the launcher enables them for (8 consecutive steps a thread, lane = 4 * channel lane +
step lane), against sums and the reverse recurrence computed directly. The GPU run checks the compiled kernel.
"""
import re

import numpy as np
import pytest

pytest.importorskip("triton")

from hybrid.kernels.selective_scan.triton_bwd_rolled import _chan_sum_asm, _fwd_scan_asm, _rev_scan_asm  # noqa: E402


def _imm(tok):
    if tok.startswith("0f"):
        return np.frombuffer(bytes.fromhex(tok[2:])[::-1], dtype=np.float32)[0]
    return int(tok, 0)


def run_ptx(asm: str, operands: list) -> tuple[list, list]:
    """Execute `asm` on 32 lanes. operands[k]: the value of $k per lane (a list of 32, None for outputs). Returns
    the operands after it ran and the stores as (lane, address, value)."""
    regs = [{f"${k}": (operands[k][ln] if operands[k] is not None else None) for k in range(len(operands))}
            for ln in range(32)]
    stores = []

    def val(ln, tok):
        if tok == "%laneid":
            return ln
        if tok in regs[ln]:
            return regs[ln][tok]
        return _imm(tok)

    body = re.sub(r"\.reg[^;]*;", "", asm).replace("{", "").replace("}", "")
    for ins in (s.strip() for s in body.split(";")):
        if not ins:
            continue
        guard = None
        if ins.startswith("@"):
            guard, ins = ins.split(None, 1)
        op, args = ins.split(None, 1)
        args = [a.strip() for a in args.split(",")]
        active = [guard is None or bool(regs[ln][guard.lstrip("@!")]) != guard.startswith("@!") for ln in range(32)]
        if op.startswith("shfl.sync"):
            dst, src, b, c = args[0], args[1], _imm(args[2]), _imm(args[3])
            dst, pred = (dst.split("|") + [None])[:2]
            source = [val(ln, src) for ln in range(32)]
            for ln in range(32):
                seg, clamp = (c >> 8) & 31, c & 31  # c = segment mask << 8 | clamp
                if ".bfly" in op:
                    j, ok = ln ^ b, True
                elif ".down" in op:
                    j = ln + b
                    ok = j <= ((ln & seg) | (clamp & ~seg))
                else:  # .up
                    j = ln - b
                    ok = j >= ((ln & seg) | (clamp & ~seg))
                regs[ln][dst] = np.float32(source[j] if ok else source[ln])
                if pred:
                    regs[ln][pred] = ok
            continue
        for ln in range(32):
            if not active[ln]:
                continue
            v = [val(ln, a) for a in args[1:]]
            if op.startswith("st.global"):
                stores.append((ln, int(regs[ln][args[0].strip("[]")]), float(val(ln, args[1]))))
            elif op == "and.b32":
                regs[ln][args[0]] = int(v[0]) & int(v[1])
            elif op == "setp.ne.u32":
                regs[ln][args[0]] = int(v[0]) != int(v[1])
            elif op == "setp.eq.u32":
                regs[ln][args[0]] = int(v[0]) == int(v[1])
            elif op.startswith("selp"):
                regs[ln][args[0]] = v[0] if v[2] else v[1]
            elif op.startswith("mov"):
                regs[ln][args[0]] = v[0]
            elif op == "add.f32":
                regs[ln][args[0]] = np.float32(v[0] + v[1])
            elif op == "mul.f32":
                regs[ln][args[0]] = np.float32(v[0] * v[1])
            elif op == "fma.rn.f32":
                regs[ln][args[0]] = np.float32(np.float64(v[0]) * v[1] + v[2])
            elif op.startswith("cvt"):
                regs[ln][args[0]] = v[0]  # the 16-bit rounding is not what is checked here
            else:
                raise AssertionError(f"instruction not emulated: {op}")
    return [[regs[ln][f"${k}"] for ln in range(32)] for k in range(len(operands))], stores


@pytest.mark.parametrize("store", ["st.global.f32 [$16], w;", "cvt.rn.bf16.f32 hw, w; st.global.b16 [$16], hw;"])
def test_channel_sums(store):
    """Each of the tile's 32 steps gets the sum over the 8 channels, stored once, at the address the kernel gives
    the lane (its step group + its channel lane)."""
    X = np.random.default_rng(0).standard_normal((8, 32)).astype(np.float32)  # [channel, step]
    lane_x = [[X[ln >> 2, (ln & 3) * 8 + i] for ln in range(32)] for i in range(8)]
    addr = [1000 + (ln & 3) * 8 + (ln >> 2) for ln in range(32)]  # _chan_sum_store: row + (tt // 8) * 8 + lane
    ops = [None] * 8 + lane_x + [addr] * 8
    _, stores = run_ptx(_chan_sum_asm(store), ops)
    got = {a - 1000: v for _, a, v in stores}
    assert sorted(got) == list(range(32)), "every step stored exactly once"
    np.testing.assert_allclose([got[t] for t in range(32)], X.astype(np.float64).sum(0), rtol=1e-5, atol=1e-5)


def test_reverse_scan():
    """g_t = cg_t + a_{t+1} g_{t+1} over each channel's 32 steps (0 past the tile), every channel at once; the
    carry out a_0 g_0 stored once per channel, at the channel's address."""
    rng = np.random.default_rng(1)
    a = rng.uniform(0.3, 1.0, (8, 32)).astype(np.float32)
    cg = rng.standard_normal((8, 32)).astype(np.float32)
    ref = np.zeros((8, 32))
    for t in range(31, -1, -1):
        ref[:, t] = cg[:, t] + (a[:, t + 1] * ref[:, t + 1] if t < 31 else 0.0)
    lane = lambda X, i: [X[ln >> 2, (ln & 3) * 8 + i] for ln in range(32)]  # noqa: E731
    addr = [5000 + (ln >> 2) for ln in range(32)]  # _rev_scan: carry_ptr[channel], the same for its 8 steps
    out, stores = run_ptx(_rev_scan_asm(), [None] * 8 + [lane(a, i) for i in range(8)]
                          + [lane(cg, i) for i in range(8)] + [addr] * 8)
    g = np.zeros((8, 32))
    for i in range(8):
        for ln in range(32):
            g[ln >> 2, (ln & 3) * 8 + i] = out[i][ln]
    np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-5)
    carry = {address - 5000: v for _, address, v in stores}
    assert len(stores) == 8 and sorted(carry) == list(range(8)), stores
    np.testing.assert_allclose([carry[d] for d in range(8)], a[:, 0] * ref[:, 0], rtol=1e-5, atol=1e-6)


def test_forward_scan():
    """h_t = a_t h_{t-1} + b_t over each channel's 32 steps from the channel's entering state h_in."""
    rng = np.random.default_rng(2)
    a = rng.uniform(0.3, 1.0, (8, 32)).astype(np.float32)
    b = rng.standard_normal((8, 32)).astype(np.float32)
    h_in = rng.standard_normal(8).astype(np.float32)
    ref = np.zeros((8, 32))
    h = h_in.astype(np.float64)
    for t in range(32):
        h = a[:, t] * h + b[:, t]
        ref[:, t] = h
    lane = lambda X, i: [X[ln >> 2, (ln & 3) * 8 + i] for ln in range(32)]  # noqa: E731
    out, stores = run_ptx(_fwd_scan_asm(), [None] * 8 + [lane(a, i) for i in range(8)]
                          + [lane(b, i) for i in range(8)] + [[h_in[ln >> 2] for ln in range(32)]] * 8)
    got = np.zeros((8, 32))
    for i in range(8):
        for ln in range(32):
            got[ln >> 2, (ln & 3) * 8 + i] = out[i][ln]
    assert not stores
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_asm_operands_get_the_assumed_layout(tmp_path):
    """Compiled for sm_90 (on any machine; no GPU), the rolled backward with bwd_asm=7 hands the inline-PTX pieces
    (the forward and reverse scans, the two channel sums) [8, 32] tiles in the layout their lane arithmetic assumes: 8 consecutive steps a thread, 4 lanes along the
    steps, 8 along the channels, one warp (a Triton upgrade that lays the tile out otherwise fails here)."""
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DEFAULT_FP_FUSION="1", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "hybrid.bench", "scan_compiled", "--L", "1024", "--dump",
                          str(tmp_path), "--config", json.dumps(dict(bwd_kernel=1, bwd_asm=7))],
                         capture_output=True, text=True, env=env, timeout=300)
    if res.returncode != 0 and "NVIDIA" not in res.stderr + res.stdout and "ptxas" in res.stderr:
        pytest.skip(f"no NVIDIA backend to compile with: {res.stderr[-300:]}")
    assert res.returncode == 0, res.stderr[-2000:]
    ttgir = (tmp_path / "bwd_0.ttgir").read_text()
    layouts = dict(re.findall(r"^(#blocked\d*) = #ttg\.blocked<(.*)>$", ttgir, re.M))
    used = re.findall(r"packed_element = 8 : i32, pure = \w+\} [^:]*: tensor<8x32xf32, (#blocked\d*)>", ttgir)
    assert len(used) == 4, used
    for name in used:
        assert layouts[name] == ("{sizePerThread = [1, 8], threadsPerWarp = [8, 4], warpsPerCTA = [1, 1], "
                                 "order = [1, 0]}"), layouts[name]
