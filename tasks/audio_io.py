"""Audio to tokens: reading a file (soundfile), band-limited resampling (torch), 8-bit mu-law.

Decoding goes through soundfile (libsndfile: WAV, FLAC, OGG, and MP3 where libsndfile >= 1.1), not through
`datasets`' Audio feature: in datasets 5.x that feature encodes and decodes with torchcodec, which needs a
torch build matching ours and FFmpeg. `datasets` still finds the files (tasks/audio.py) and stores the result.

Resampling is windowed-sinc interpolation written in torch (torchaudio would need another torch build and
scipy is not a dependency): the ratio new/orig is reduced by the gcd to up/down, each of the `up` output phases
gets its own Kaiser-windowed sinc filter, and one strided conv1d applies them all. The low-pass cutoff sits at
`rolloff` times the lower of the two Nyquist frequencies, so downsampling removes what would alias.
"""
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MU = 255  # 8-bit mu-law: 256 levels, tokens 0..255
MAX_PHASES = 1024  # resampling filters: at most this many output phases (new / gcd(orig, new))


def mu_law_encode(x: torch.Tensor, mu: int = MU) -> torch.Tensor:
    """Float samples [...] in [-1, 1] (clipped) -> int64 tokens [...] in 0..mu.

    Example: mu_law_encode(torch.tensor([-1.0, 0.0, 1.0])) == tensor([0, 128, 255]).
    """
    x = x.to(torch.float64).clamp(-1.0, 1.0)
    y = torch.sign(x) * torch.log1p(mu * x.abs()) / math.log1p(mu)  # [-1, 1], finer steps near 0
    return torch.round((y + 1) / 2 * mu).to(torch.int64)


def mu_law_decode(q: torch.Tensor, mu: int = MU) -> torch.Tensor:
    """Int tokens [...] in 0..mu -> float32 samples [...] in [-1, 1]; the inverse of mu_law_encode up to the
    quantisation step."""
    y = 2 * q.to(torch.float64) / mu - 1
    x = torch.sign(y) * (torch.pow(1.0 + mu, y.abs()) - 1) / mu
    return x.to(torch.float32)


def check_rate(name: str, rate) -> int:
    if isinstance(rate, bool) or int(rate) != rate or int(rate) <= 0:
        raise ValueError(f"{name}={rate!r}; must be a positive whole number of Hz")
    return int(rate)


def resample_ratio(orig: int, new: int) -> tuple[int, int]:
    """(up, down): new / orig in lowest terms. A ratio that needs more than MAX_PHASES filter phases is an error
    naming both rates: e.g. 44100 -> 16001 Hz would need 16001 phases."""
    orig, new = check_rate("orig_rate", orig), check_rate("new_rate", new)
    g = math.gcd(orig, new)
    up, down = new // g, orig // g
    if up > MAX_PHASES:
        raise ValueError(f"cannot resample {orig} Hz to {new} Hz: the ratio reduces to {up}/{down}, which needs "
                         f"{up} filter phases; allowed at most {MAX_PHASES}. Choose a target rate sharing a larger "
                         f"common divisor with {orig} (e.g. 8000, 16000, 22050, 24000, 44100, 48000)")
    return up, down


def _sinc_filters(up: int, down: int, zeros: int, rolloff: float, beta: float) -> tuple[torch.Tensor, int]:
    """Per-phase filters [up, 1, taps] (float64) and the first input offset m_lo they start at.

    Output j = k * up + p sits at input time k * down + p * down / up; phase p's filter holds h(p * down / up - m)
    for input offsets m = m_lo .. m_lo + taps - 1, with h a Kaiser-windowed sinc of cutoff fc cycles/sample.
    """
    fc = 0.5 * rolloff * min(1.0, up / down)  # cycles per input sample, below both Nyquists
    half = zeros / (2 * fc)  # filter half-width in input samples: `zeros` sinc zero crossings each side
    phase = torch.arange(up, dtype=torch.float64) * down / up  # [up]
    m_lo, m_hi = math.floor(-half), math.ceil(phase[-1].item() + half)
    m = torch.arange(m_lo, m_hi + 1, dtype=torch.float64)  # [taps]
    tau = phase[:, None] - m[None, :]  # [up, taps] distance from output time to each input sample
    inside = tau.abs() <= half
    window = torch.special.i0(beta * torch.sqrt((1 - (tau / half) ** 2).clamp(min=0))) / torch.special.i0(
        torch.tensor(beta, dtype=torch.float64))
    h = 2 * fc * torch.sinc(2 * fc * tau) * window * inside  # [up, taps]; sums to ~1 per phase (unit DC gain)
    return h[:, None, :], m_lo


def resample(x: torch.Tensor, orig_rate: int, new_rate: int, *, zeros: int = 24, rolloff: float = 0.94,
             beta: float = 9.0) -> torch.Tensor:
    """Band-limited resampling of x [..., T] from orig_rate to new_rate Hz -> [..., ceil(T * new / orig)],
    float32 (computed in float64). Same rate returns x unchanged. Edges are zero-padded."""
    up, down = resample_ratio(orig_rate, new_rate)
    if up == down:
        return x
    lead, T = x.shape[:-1], x.shape[-1]
    n_out = -(-T * up // down)  # ceil(T * up / down)
    weight, m_lo = _sinc_filters(up, down, zeros, rolloff, beta)  # [up, 1, taps]
    taps = weight.shape[-1]
    blocks = -(-n_out // up)  # outputs per phase
    need = (blocks - 1) * down + taps  # padded input length the strided conv reads
    flat = x.reshape(-1, 1, T).to(torch.float64)  # [rows, 1, T]
    padded = F.pad(flat, (-m_lo, max(0, need - T + m_lo)))  # padded[n] = x[n + m_lo]
    out = F.conv1d(padded, weight, stride=down)[..., :blocks]  # [rows, up, blocks]: out[r, p, k] = y[k * up + p]
    y = out.transpose(1, 2).reshape(flat.shape[0], blocks * up)[:, :n_out]  # [rows, n_out], interleaved phases
    return y.reshape(*lead, n_out).to(torch.float32)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A file's samples as float32 [T] in [-1, 1] (channels averaged) and its sample rate. Raises whatever
    soundfile raises for an unreadable file (the caller names the file)."""
    import soundfile  # the `data` extra: pip install 'hybrid[data]'

    data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # [T, channels]
    return data.mean(axis=1), int(rate)


def audio_to_tokens(samples: np.ndarray, rate: int, target_rate: int, normalize: str = "peak") -> np.ndarray:
    """Float samples [T] at `rate` -> uint8 mu-law tokens [T'] at `target_rate`. normalize="peak" scales each
    file to peak 1 first (quiet recordings would otherwise use a few levels); "none" keeps the file's gain."""
    x = resample(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)), rate, target_rate)
    if normalize == "peak":
        peak = x.abs().max() if x.numel() else torch.tensor(0.0)
        if peak > 0:
            x = x / peak
    elif normalize != "none":
        raise ValueError(f"normalize={normalize!r}; allowed: 'peak', 'none'")
    return mu_law_encode(x).to(torch.uint8).numpy()
