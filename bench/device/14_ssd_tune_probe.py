"""Device probe (session 7): per-kernel time of our SSD at the bench's shape (L 16384, batch 8, 32 x 64, N 128,
chunk 256, bf16, fwd+bwd) under other num_warps / num_stages, by wrapping the module's kernel objects."""
import importlib, json, os, time
import torch
from hybrid.bench.ssd_stages import _kernel_times
F = importlib.import_module("hybrid.kernels.ssd.triton")  # `import a.b as` would find the ssd function
Bw = importlib.import_module("hybrid.kernels.ssd.triton_bwd")
from hybrid.kernels import ssd

KERNELS = [(F, "_chunk_out_fwd_kernel"), (Bw, "_dx_kernel"), (Bw, "_dcb_kernel"), (F, "_chunk_outer_kernel")]
if os.environ.get("SET") == "2":
    KERNELS = [(Bw, "_dc_kernel"), (Bw, "_db_kernel"), (F, "_cb_kernel"), (F, "_state_pass_fwd_kernel"), (F, "_state_pass_bwd_kernel")]
ORIG = {name: getattr(m, name) for m, name in KERNELS}

class Wrap:
    def __init__(self, k, w, s): self.k, self.w, self.s = k, w, s
    def __getitem__(self, grid):
        def launch(*a, **kw):
            kw["num_warps"], kw["num_stages"] = self.w, self.s
            return self.k[grid](*a, **kw)
        return launch

torch.manual_seed(0)
b, L, h, p, g, n = 8, int(os.environ.get("L", 16384)), 32, 64, 1, 128
dev, bf = "cuda", torch.bfloat16
x = torch.randn(b, L, h, p, device=dev, dtype=bf, requires_grad=True)
dt = torch.randn(b, L, h, device=dev, dtype=torch.float32, requires_grad=True)
A = -torch.rand(h, device=dev) - 0.5
B = torch.randn(b, L, g, n, device=dev, dtype=bf, requires_grad=True)
C = torch.randn(b, L, g, n, device=dev, dtype=bf, requires_grad=True)
bias = torch.randn(h, device=dev) * 0.5 - 3
def step():
    y = ssd(x, dt, A, B, C, 256, D=torch.ones(h, device=dev), dt_bias=bias, dt_softplus=True, backend="triton")
    y.backward(gy)
    for t in (x, dt, B, C): t.grad = None
gy = torch.randn(b, L, h, p, device=dev, dtype=bf)
out = []
deadline = time.time() + float(os.environ.get("BUDGET", 120))
for w, s in [(4, 3), (8, 3), (4, 2), (8, 2), (4, 1), (8, 1), (4, 4), (8, 4)][:int(os.environ.get("NCONF", 8))]:
    if time.time() > deadline: break
    for m, name in KERNELS: setattr(m, name, Wrap(ORIG[name], w, s))
    try:
        step(); torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(3): step()
            torch.cuda.synchronize()
    except Exception as e:
        print(f"w{w} s{s}: {type(e).__name__} {str(e)[:100]}"); continue
    t = {k: us / 1e3 for k, us in _kernel_times(prof, "cuda", 3).items()}  # the stage bench's per-kernel sums, in ms
    row = dict(warps=w, stages=s, **{k: round(t.get(k, float("nan")), 3) for _, k in KERNELS}, total=round(sum(t.values()), 3))
    print(row, flush=True); out.append(row)
json.dump(out, open(os.path.join(os.environ.get("OUT", "."), f"ssd_tune_probe{os.environ.get('SET', '')}.json"), "w"), indent=1)
