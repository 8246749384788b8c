"""A seeded generator of piano-like music, written out as WAV files: the built-in audio corpus.

A piece has a random tempo (70..150 bpm) and a random major or minor key. The left hand holds a triad of the
scale (mostly I, IV, V, vi) for each bar of 4 beats, or rests; the right hand plays a melody moving mostly by
steps of the scale, notes of 1/4 to 2 beats, with occasional rests. A note is a sum of up to 10 partials at the piano's slightly stretched frequencies
f_k = k f0 sqrt(1 + B k^2), amplitudes falling as k^-1.3, each decaying exponentially (higher partials and higher
notes faster), with a 4 ms attack and a 60 ms release at the note's end. The mix is scaled to peak 0.9 and gets a faint
Gaussian noise floor (std 3e-4), as a recording has.

Piece i of seed s depends only on (s, i, sample_rate, seconds): numpy's PCG64 stream seeded with [s, i].

Example: `write_pieces("/tmp/piano", num_pieces=2, seconds=3.0, seed=0)` writes piece_0000.wav and
piece_0001.wav (16 kHz, 16-bit PCM) and returns their paths.
"""
from pathlib import Path

import numpy as np

MAJOR = [0, 2, 4, 5, 7, 9, 11]
MINOR = [0, 2, 3, 5, 7, 8, 10]


def _note(midi: int, seconds: float, velocity: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """One piano-like note: float32 samples [ceil((seconds + release) * rate)]."""
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    release = 0.06
    n = int(np.ceil((seconds + release) * rate))
    t = np.arange(n, dtype=np.float32) / np.float32(rate)  # [n]; float32: numpy's vectorised sin and exp
    k = np.arange(1, 11)  # partial numbers [K]
    freqs = k * f0 * np.sqrt(1 + 1e-4 * k**2)  # stretched partials
    keep = freqs < 0.45 * rate  # stay below Nyquist
    k, freqs = k[keep], freqs[keep]
    amps = k**-1.3 * velocity  # [K]
    decay = 0.9 * (261.6 / f0) ** 0.5 / (1 + 0.35 * (k - 1))  # seconds, [K]: low notes and low partials ring longer
    phases = rng.uniform(0, 2 * np.pi, size=k.size)  # [K]
    out = np.zeros(n, dtype=np.float32)
    for a, f, d, p in zip(amps, freqs, decay, phases):
        m = min(n, int(8 * d * rate))  # after 8 decay times a partial is below 1/3000 of its start: stop there
        tm = t[:m]
        out[:m] += np.float32(a) * np.exp(tm * np.float32(-1 / d)) * np.sin(tm * np.float32(2 * np.pi * f) + np.float32(p))
    envelope = np.minimum(1.0, t / 0.004)  # attack
    envelope *= np.clip((seconds + release - t) / release, 0.0, 1.0)  # release after the key goes up
    return out * envelope


def piano_piece(seed: int, index: int, sample_rate: int = 16000, seconds: float = 4.0) -> np.ndarray:
    """Piece `index` of `seed`: float32 samples [round(seconds * sample_rate)], peak 0.9 plus a noise floor."""
    rng = np.random.default_rng([int(seed), int(index)])
    total = round(seconds * sample_rate)
    out = np.zeros(total + 3 * sample_rate, dtype=np.float32)  # room for the last notes' tails, cut below
    scale = MAJOR if rng.random() < 0.5 else MINOR
    tonic = int(rng.integers(55, 67))  # melody register around middle C .. G4
    beat = 60.0 / rng.uniform(70, 150)

    def play(pitches, start, length, loudness):
        first = int(start * sample_rate)
        for p in pitches:
            note = _note(p, length, loudness * float(rng.uniform(0.7, 1.0)), sample_rate, rng)
            end = min(first + note.size, out.size)
            out[first:end] += note[:end - first]

    def pitch(degree, octave):  # scale degree (any integer) -> MIDI number
        return tonic + 12 * (octave + degree // 7) + scale[degree % 7]

    # left hand: a triad per bar of 4 beats (or a rest), held for the bar
    for bar in range(int(np.ceil(seconds / (4 * beat)))):
        if rng.random() < 0.8:
            root = int(rng.choice([0, 3, 4, 5, 0, 4]))  # I, IV, V, vi mostly
            play([pitch(root + j, -1) for j in (0, 2, 4)], bar * 4 * beat, 4 * beat, 0.5)
    # right hand: a melody moving mostly by steps, with rests
    degree, time = int(rng.integers(0, 7)), 0.0
    while time < seconds:
        length = beat * float(rng.choice([0.25, 0.5, 0.5, 1.0, 1.0, 2.0]))
        if rng.random() > 0.1:
            degree = int(np.clip(degree + rng.integers(-2, 3), -3, 10))
            play([pitch(degree, 0)], time, length, 1.0)
        time += length
    out = out[:total]
    peak = np.abs(out).max()
    out = out * (0.9 / peak) if peak > 0 else out
    out += rng.normal(0.0, 3e-4, size=total)  # a recording's noise floor: silence is not exactly zero
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def write_pieces(folder: str | Path, num_pieces: int, seconds: float, seed: int = 0,
                 sample_rate: int = 16000) -> list[Path]:
    """Write pieces 0..num_pieces-1 as folder/piece_<i>.wav (16-bit PCM); returns their paths."""
    import soundfile  # the `data` extra

    if int(num_pieces) < 1 or not float(seconds) > 0:
        raise ValueError(f"num_pieces={num_pieces}, seconds={seconds}; both must be > 0")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(int(num_pieces)):
        path = folder / f"piece_{i:04d}.wav"
        soundfile.write(str(path), piano_piece(seed, i, sample_rate, seconds), sample_rate, subtype="PCM_16")
        paths.append(path)
    return paths


DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = ["en-us", "en-gb"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "f1", "f2", "f3", "f4"]


def write_spoken_digits(folder: str | Path, count: int, seed: int = 0, seconds: float = 1.0) -> list[Path]:
    """SC09-like clips made with the espeak-ng program: `count` words "zero".."nine" in random voices, speeds and
    pitches, each padded or cut to `seconds` (espeak-ng's 22050 Hz, 16-bit PCM), as folder/<digit>_<i>.wav.
    Needs espeak-ng on the PATH (Debian/Ubuntu: apt-get install espeak-ng)."""
    import shutil
    import subprocess

    import soundfile

    program = shutil.which("espeak-ng")
    if program is None:
        raise RuntimeError("source=spoken_digits needs the espeak-ng program, which is not on the PATH "
                           "(Debian/Ubuntu: apt-get install espeak-ng; macOS: brew install espeak-ng); "
                           "source=synthetic (the default) needs nothing")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([int(seed), 9])
    paths = []
    for i in range(int(count)):
        digit = int(rng.integers(0, 10))
        voice = f"{rng.choice(VOICES)}+{rng.choice(VARIANTS)}"
        speed, pitch = int(rng.integers(120, 200)), int(rng.integers(20, 80))
        path = folder / f"{DIGITS[digit]}_{i:05d}.wav"
        subprocess.run([program, "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), DIGITS[digit]],
                       check=True, capture_output=True)
        samples, rate = soundfile.read(str(path), dtype="int16")
        n = round(seconds * rate)
        fixed = np.zeros(n, dtype=np.int16)
        fixed[:min(n, samples.size)] = samples[:n]
        soundfile.write(str(path), fixed, rate, subtype="PCM_16")
        paths.append(path)
    return paths
