"""Autoregressive audio: predict the next 8-bit mu-law sample of a 16 kHz waveform (SaShiMi, Mamba section 4.4).

Sources (`source`):
  synthetic      (default) seeded piano-like music from tasks/audio_synth.py, written as WAV files into the cache
                 and read back through the same folder path as real audio: no download, runs anywhere.
  folder         any folder of audio files (`data_dir`), e.g. your copy of YouTubeMix or SC09. `datasets`'
                 "audiofolder" finds them (WAV, FLAC, MP3, OGG..., recursively; train/, validation/, test/
                 subfolders become the splits when all three exist), soundfile decodes them, channels are
                 averaged, tasks/audio_io.py resamples to `sample_rate` and mu-law quantises to 256 levels.
  spoken_digits  SC09-like one-second words "zero".."nine" spoken by espeak-ng (optional: needs the program).

Each file is one document: windows never cross files, and a window longer than every file is an error. The
tokens are bytes, so the evaluation loss / ln 2 is bits per byte (one byte per sample). Files that soundfile
cannot read are named, then `on_bad_file` decides: "error" stops, "skip" leaves them out with a warning.

Example: `AudioConfig(synth_pieces=4, synth_seconds=2.0, train_length=64, eval_lengths=[64]).generate(seed=0,
split="train", step=0, batch_size=2, length=64)` gives inputs [2, 64] of mu-law tokens (0..255, 128 = silence)
and targets [2, 64] with targets[:, t] == the sample after inputs[:, t].
"""
import logging
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from hybrid.tasks.audio_io import audio_to_tokens, check_rate, read_audio, resample_ratio
from hybrid.tasks.corpus import CorpusConfig, file_fingerprint, key_hash, quiet_datasets

log = logging.getLogger(__name__)
SOURCES = ("synthetic", "folder", "spoken_digits")
OWN_SPLITS = {"train": "train", "validation": "validation", "valid": "validation", "val": "validation",
              "dev": "validation", "test": "test"}


def list_audio_files(data_dir: str | Path) -> dict[str, list[Path]]:
    """The audio files under data_dir by split, as `datasets`' audiofolder finds them: {"train", "validation",
    "test"} when the folder has all three split subfolders, else {"all": every file}. Sorted by path."""
    from datasets import Features, Value, load_dataset
    from datasets.data_files import EmptyDatasetError

    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"audio data_dir {str(root)!r} is not a directory")
    from datasets.packaged_modules.audiofolder.audiofolder import AudioFolder

    extensions = {e.lower() for e in AudioFolder.EXTENSIONS}
    if not any(p.suffix.lower() in extensions for p in root.rglob("*") if p.is_file()):
        raise FileNotFoundError(f"no audio files (.wav, .flac, .mp3, .ogg, ...) in {str(root)!r} or its subfolders")
    with tempfile.TemporaryDirectory(prefix="hybrid-audiofolder-") as scratch, quiet_datasets():
        try:  # a string feature: datasets lists the paths, without its torchcodec-based Audio encoding
            found = load_dataset("audiofolder", data_dir=str(root), features=Features({"audio": Value("string")}),
                                 drop_labels=True, drop_metadata=True, cache_dir=scratch)
        except EmptyDatasetError:
            raise FileNotFoundError(f"no audio files (.wav, .flac, .mp3, .ogg, ...) in {str(root)!r} or its "
                                    f"subfolders") from None
        by_split = {name: sorted(Path(p) for p in ds["audio"]) for name, ds in found.items()}
    mapped = {OWN_SPLITS[n]: files for n, files in by_split.items() if n in OWN_SPLITS}
    if set(mapped) == {"train", "validation", "test"} and len(mapped) == len(by_split):
        return mapped
    return {"all": sorted(p for files in by_split.values() for p in files)}


@dataclass(kw_only=True)
class AudioConfig(CorpusConfig):
    source: str = "synthetic"  # synthetic | folder | spoken_digits
    data_dir: str | None = None  # source=folder: the folder of audio files
    sample_rate: int = 16000  # every file is resampled to this rate
    normalize: str = "peak"  # peak: scale each file to peak 1 before mu-law | none
    synth_pieces: int = 32  # source=synthetic: number of pieces (files) ...
    synth_seconds: float = 4.0  # ... their length ...
    synth_seed: int = 0  # ... and their seed: the corpus stays the same when the run's seed is swept
    digits_count: int = 300  # source=spoken_digits: number of one-second clips
    shuffle_documents: bool = True  # files are assigned to splits in a fixed random order
    train_length: int = 512
    eval_lengths: list[int] = field(default_factory=lambda: [256, 512, 1024])

    kind: ClassVar[str] = "audio"
    cross_documents: ClassVar[bool] = False

    def validate(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"AudioConfig.source={self.source!r}; allowed: {', '.join(SOURCES)}")
        if self.source == "folder" and not self.data_dir:
            raise ValueError("AudioConfig.source='folder' needs data_dir (a folder of WAV/FLAC files)")
        if self.normalize not in ("peak", "none"):
            raise ValueError(f"AudioConfig.normalize={self.normalize!r}; allowed: peak, none")
        check_rate("AudioConfig.sample_rate", self.sample_rate)  # reachability is checked per file
        super().validate()

    def describe_source(self) -> str:
        return {"folder": f"audio folder {self.data_dir}", "synthetic": "synthetic piano audio",
                "spoken_digits": "espeak-ng spoken digits"}[self.source]

    def length_note(self, tokens: int) -> str:
        return f" = {tokens / self.sample_rate:.3f} s at {self.sample_rate} Hz"

    def folder(self) -> Path:
        """The folder the corpus is read from; for generated sources, written into the cache first."""
        if self.source == "folder":
            return Path(self.data_dir).expanduser().resolve()
        from filelock import FileLock

        self.cache_root().mkdir(parents=True, exist_ok=True)
        if self.source == "synthetic":
            params = {"pieces": self.synth_pieces, "seconds": self.synth_seconds, "seed": self.synth_seed}
        else:
            params = {"count": self.digits_count, "seed": self.synth_seed}
        path = self.cache_root() / f"audio-{self.source}-{key_hash(params)}"
        with FileLock(str(path) + ".lock"):
            if not (path / "done").exists():
                from hybrid.tasks.audio_synth import write_pieces, write_spoken_digits

                shutil.rmtree(path, ignore_errors=True)
                if self.source == "synthetic":
                    write_pieces(path, self.synth_pieces, self.synth_seconds, seed=self.synth_seed)
                else:
                    write_spoken_digits(path, self.digits_count, seed=self.synth_seed)
                (path / "done").write_text("complete\n")
        return path

    def cache_key(self) -> dict:
        cached = self.__dict__.get("_key")
        if cached is None:
            files = list_audio_files(self.folder())
            cached = {"files": {split: file_fingerprint(paths) for split, paths in files.items()},
                      "sample_rate": int(self.sample_rate), "normalize": self.normalize}
            self.__dict__["_key"] = cached
        return cached

    def build(self):
        root = self.folder()
        by_split, skipped = {}, []
        for split, entries in self.cache_key()["files"].items():
            docs = []
            for path, _, _ in entries:
                name = str(Path(path).relative_to(root)) if Path(path).is_relative_to(root) else path
                try:
                    samples, rate = read_audio(path)
                except Exception as err:  # noqa: BLE001 - soundfile raises LibsndfileError, RuntimeError, TypeError...
                    skipped.append(f"{path} ({type(err).__name__}: {err})")
                    continue
                if samples.size == 0:
                    skipped.append(f"{path} (no samples)")
                    continue
                try:  # an unreachable rate stops the build: skipping would hide a whole class of files
                    resample_ratio(rate, self.sample_rate)
                except ValueError as err:
                    raise ValueError(f"{path}: {err}") from None
                docs.append((name, audio_to_tokens(samples, rate, self.sample_rate, self.normalize)))
            by_split[split] = docs
        return by_split, skipped
