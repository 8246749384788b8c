"""How many backward launches the selective scan makes (`bwd_segments`, 0: chosen from the partials' memory) and that
the choice keeps the dB/dC partials within u's bytes. Pure host-side arithmetic: no kernels run here (the kernels'
results for every segment count are tests/kernels/test_triton_scan.py's)."""
import pytest
import torch

pytest.importorskip("triton")

from hybrid.kernels.selective_scan.triton import CONFIG, _n_segments, make_cfg  # noqa: E402


def segments(L, dim=2048, N=16, n_sel=2, part_bytes=2, u_bytes=2, **cfg):
    c = dict(CONFIG, **cfg)
    n_tiles = -(-L // c["chunk"])
    return _n_segments(c, n_tiles, L, dim, -(-dim // c["bwd_block_d"]), N, n_sel, part_bytes, u_bytes)


@pytest.mark.parametrize("L", [1024, 4096, 65536, 1040])
def test_automatic_segments_bound_the_partials(L):
    """The bench's shapes (dim 2048, N 16, bf16): 4 launches with 16-bit partials, 8 with fp32 ones; and the partials
    of the longest segment never take more than u's bytes (1040: a partial tile)."""
    for part_bytes, expected in ((2, 4), (4, 8)):
        n_seg = segments(L, part_bytes=part_bytes)
        assert n_seg in (expected, expected + 1)
        n_tiles = -(-L // 32)
        seg_len = -(-n_tiles // n_seg) * 32
        assert 2 * (2048 // 8) * 16 * seg_len * part_bytes <= 2048 * L * 2


def test_short_or_lti_sequences_and_explicit_counts():
    assert segments(40, dim=5, N=3) >= 1
    assert segments(1, dim=5, N=3) == 1  # one tile: one launch
    assert segments(4096, n_sel=0) == 1  # LTI B and C: no sequence-long partials
    assert segments(4096, bwd_segments=3) == 3
    assert segments(64, bwd_segments=16) == 2  # no more launches than tiles
    assert segments(4096, dim=64, N=4) < segments(4096, dim=64, N=16)  # fewer states: smaller partials


def test_config_checks_and_cache():
    assert make_cfg(None, dict(bwd_segments=3))[list(CONFIG).index("bwd_segments")] == 3
    with pytest.raises(ValueError, match="bwd_segments=-1"):
        make_cfg(None, dict(bwd_segments=-1))
    a = make_cfg(None, None)
    a[0] = 999  # a caller's copy: the cached answer stays
    assert make_cfg(None, None)[0] == CONFIG["chunk"]
    assert torch.tensor(make_cfg(16, None))[0] == 16


@pytest.mark.parametrize("dtype,expected", [(torch.bfloat16, torch.bfloat16), (torch.float16, torch.float32),
                                            (torch.float32, torch.float32)])
def test_partials_dtype_and_launches(dtype, expected, monkeypatch):
    """With the default config the backward's dB/dC partials are bf16 only for bf16 B, C (fp16's range could overflow
    in a partial), and it makes one backward and one sum launch per segment (kernels stubbed, meta tensors)."""
    from hybrid.bench.scan_inputs import scan_inputs
    from hybrid.kernels.selective_scan import triton as ours

    calls = []

    class Stub:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            return lambda *args, **kw: calls.append((self.name, grid, args))

    for name in ("_bwd_rolled_kernel", "_sum_partials_kernel"):
        monkeypatch.setattr(ours, name, Stub(name))
    x = {k: v.detach() for k, v in scan_inputs(8, 2048, 16, 1024, dtype, "meta", layout="block").items()}
    states = torch.empty(8, 2048, 32, 16, device="meta")
    ours._bwd(torch.empty_like(x["u"]), None, x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"],
              x["delta_bias"], states, True, make_cfg(None, None))
    sums = [args for name, _, args in calls if name == "_sum_partials_kernel"]
    n_seg = 8 if dtype == torch.float16 else 4  # fp32 partials of a 16-bit u: twice the launches
    assert [name for name, _, _ in calls] == ["_bwd_rolled_kernel", "_sum_partials_kernel"] * n_seg
    assert all(args[0].dtype == expected and args[2].dtype == expected for args in sums)  # dB's and dC's partials
    assert all(grid[2] == 2 for name, grid, _ in calls if name == "_sum_partials_kernel")  # dB and dC: one launch
