"""`python -m hybrid.bench model_compiles [--out FILE] [hybrid.train overrides ...]`: how many Triton compilations a
training run makes on a GPU from a cold cache, counted on the CPU.

It runs hybrid.train's `train(cfg)` in this process with TRITON_INTERPRET=1 (the kernels run in Triton's interpreter)
and the Triton backends asked for by name (model.blocks.M.scan_backend=triton, conv_backend=triton), and computes,
for every kernel launch, the key under which a CUDA build of Triton caches its compilation: Triton's own binder for
an sm_90 target (constexpr values, pointer dtypes and 16-byte alignment, integers equal to 1 or divisible by 16,
do_not_specialize honoured) and the launch options (warps, register cap). Each distinct (kernel, key) is one
compilation on the GPU (the first-call cost of issue 12 item 6). The run: the demo (`experiment=demo`) cut to 2
training steps with a validation, batch 2, fp32 (the dtypes change the keys, not their number: training and
validation run in the same precision), then the overrides given. The interpreter is slow (the demo's own sizes take
over 10 minutes on one core): `model.d_model=16 model.blocks.M.d_state=4` keeps every size in the demo's
specialisation classes (multiples of 16) and runs in about a minute.
"""
import argparse
import json
import os
import sys
import tempfile
from collections import Counter
from pathlib import Path

DEMO = ["experiment=demo", "trainer.max_steps=2", "trainer.val_check_interval=2", "trainer.num_sanity_val_steps=0",
        "data.batch_size=2", "data.eval_batch_size=2", "data.eval_batches=1", "checkpoint_every=2",
        "trainer.enable_progress_bar=false", "trainer.precision=32-true", "logger=csv"]
TRITON = ["model.blocks.M.scan_backend=triton", "model.blocks.M.conv_backend=triton"]


def record_keys(keys: Counter):
    """Patch Triton's interpreter so that every launch adds (kernel name, sm_90 cache key) to `keys`."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import make_backend
    from triton.runtime import interpreter
    from triton.runtime.jit import JITFunction, compute_cache_key, create_function_from_signature

    backend = make_backend(GPUTarget("cuda", 90, 32))
    binders = {}
    run = interpreter.InterpretedFunction.run

    def counted_run(self, *args, grid, warmup, **kwargs):
        if self not in binders:
            spec_kw = ("do_not_specialize", "do_not_specialize_on_alignment")
            jit = JITFunction(self.fn, **{k: v for k, v in self.kwargs.items() if k in spec_kw})
            binders[self] = create_function_from_signature(jit.signature, jit.params, backend)
        _, spec, options = binders[self](*args, **kwargs)
        keys[(f"{self.fn.__module__}.{self.fn.__name__}", compute_cache_key({}, spec, options))] += 1
        return run(self, *args, grid=grid, warmup=warmup, **kwargs)

    interpreter.InterpretedFunction.run = counted_run


def count(overrides: list[str]) -> dict:
    """Run the training run and return {kernel: number of distinct compilations} and the launches."""
    from hydra import compose, initialize_config_dir

    keys = Counter()
    record_keys(keys)
    from hybrid.train import train

    conf = str(Path(__file__).resolve().parents[2] / "conf")
    with tempfile.TemporaryDirectory() as run_dir, initialize_config_dir(conf, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"run_dir={run_dir}"])
        train(cfg)
    per_kernel = Counter(name for name, _ in keys)
    return {"compilations": dict(sorted(per_kernel.items())), "total": sum(per_kernel.values()),
            "launches": sum(keys.values())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m hybrid.bench model_compiles", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="also write the counts here (JSON)")
    p.add_argument("overrides", nargs="*", help=f"hybrid.train overrides after {' '.join(DEMO)}")
    a = p.parse_args(argv)
    if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
        print("model_compiles: run it in a fresh process (Triton was imported without TRITON_INTERPRET=1)",
              file=sys.stderr)
        return 2
    os.environ["TRITON_INTERPRET"] = "1"
    overrides = DEMO + a.overrides + TRITON
    res = dict(overrides=overrides, **count(overrides))
    print(json.dumps(res, indent=1))
    if a.out:
        a.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
