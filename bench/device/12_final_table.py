"""The short table that bench/device/12_final.sh prints last: from its scan bench and model bench JSON (either may be
missing or cut short), our scan vs mamba-ssm's per L and layout (fwd+bwd and fwd ms, peak MiB, ratios), the training
rows (tokens/s, peak GB) and the M block rows (fwd+bwd ms).

    python3 bench/device/12_final_table.py SCAN.json MODEL.json
"""
import json
import sys


def rows_of(path):
    try:
        return json.load(open(path))["rows"]
    except (OSError, ValueError, KeyError) as err:
        print(f"{path}: no rows ({type(err).__name__})")
        return []


def ratio(a, b):
    return f"{a / b:5.2f}x" if a and b else "    -"


def scan_table(rows):
    by = {(r["provider"], r["layout"], r["mode"], r["L"]): r for r in rows if r.get("op") == "scan"}
    keys = sorted({(r["layout"], r["L"]) for r in rows if r.get("op") == "scan"}, key=lambda k: (k[0] != "block", k))
    print(f"{'layout':<11} {'L':>6} | {'fwd+bwd ours':>12} {'mamba-ssm':>9} {'ratio':>6} | {'fwd ours':>8} "
          f"{'mamba':>7} {'ratio':>6} | {'peak MiB ours':>13} {'mamba':>6} {'ratio':>6}")
    for layout, L in keys:
        o, m = by.get(("ours", layout, "fwd+bwd", L), {}), by.get(("mamba_ssm", layout, "fwd+bwd", L), {})
        of, mf = by.get(("ours", layout, "fwd", L), {}), by.get(("mamba_ssm", layout, "fwd", L), {})
        ms = lambda r: r.get("median_ms")
        mib = lambda r: r["peak_mem_bytes"] / 2**20 if r.get("peak_mem_bytes") else None
        f = lambda v, w, p: f"{v:{w}.{p}f}" if v is not None else f"{'-':>{w}}"
        print(f"{layout:<11} {L:>6} | {f(ms(o), 12, 2)} {f(ms(m), 9, 2)} {ratio(ms(o), ms(m)):>6} | "
              f"{f(ms(of), 8, 2)} {f(ms(mf), 7, 2)} {ratio(ms(of), ms(mf)):>6} | {f(mib(o), 13, 0)} "
              f"{f(mib(m), 6, 0)} {ratio(mib(o), mib(m)):>6}")


def model_table(rows):
    train = [r for r in rows if r.get("op") == "train"]
    if train:
        print(f"\n{'training stack':<28} {'scan':<10} {'tokens/s':>10} {'peak GB':>8}")
    for r in train:
        tps, peak = r.get("tokens_per_s"), r.get("peak_mem_bytes")
        print(f"{r['provider']:<28} {str(r.get('scan_backend')):<10} "
              f"{(f'{tps:10.0f}' if tps else r.get('error', '-')[:40]):>10} "
              f"{(f'{peak / 1e9:8.1f}' if peak else '-'):>8}")
    blocks = [r for r in rows if r.get("op") == "block"]
    if blocks:
        b = blocks[0]
        title = f"block (batch x L x d_model: {b.get('batch')} x {b.get('x')} x {b.get('d_model')})"
        print(f"\n{title:<44} {'fwd ms':>8} {'fwd+bwd ms':>10} {'peak MiB':>9}")
    by = {}
    for r in blocks:
        by.setdefault(r["provider"], {})[r["mode"]] = r
    for prov, modes in by.items():
        f, fb = modes.get("fwd", {}), modes.get("fwd+bwd", {})
        cell = lambda r: f"{r['median_ms']:.2f}" if r.get("median_ms") else "-"
        peak = fb.get("peak_mem_bytes")
        print(f"{prov:<44} {cell(f):>8} {cell(fb):>10} {(f'{peak / 2**20:9.0f}' if peak else '-'):>9}")


if __name__ == "__main__":
    scan_table(rows_of(sys.argv[1]))
    model_table(rows_of(sys.argv[2]))
