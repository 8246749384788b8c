"""Audio task: mu-law, resampling, the synthetic generator, the folder path through `datasets`, windows, errors,
the data module's resume, and a tiny training run."""
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("datasets")
sf = pytest.importorskip("soundfile")

from stream_resume import assert_resumes

from hybrid.tasks.audio import AudioConfig, list_audio_files
from hybrid.tasks.audio_io import audio_to_tokens, mu_law_decode, mu_law_encode, read_audio, resample
from hybrid.tasks.audio_synth import piano_piece, write_pieces
from hybrid.tasks.corpus import TokenCorpus, sample_windows
from hybrid.tasks.corpus_datamodule import CorpusDataModule

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def small(cache, **kw):
    """A synthetic corpus of 6 pieces of 0.5 s: 4 train, 1 validation, 1 test."""
    args = {"synth_pieces": 6, "synth_seconds": 0.5, "train_length": 64, "eval_lengths": [64, 128],
            "val_fraction": 1 / 6, "test_fraction": 1 / 6, "cache_dir": cache}
    return AudioConfig(**{**args, **kw})


def sine_file(path, rate, seconds=0.3, freq=440.0):
    t = np.arange(int(rate * seconds)) / rate
    sf.write(str(path), (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, subtype="PCM_16")


# -- mu-law and resampling ----------------------------------------------------------------------------------
def test_mu_law_round_trip_error_bound():
    x = torch.rand(20000, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    q = mu_law_encode(x)
    assert q.dtype == torch.int64 and q.min() >= 0 and q.max() <= 255
    err = (mu_law_decode(q).double() - x).abs()
    # half a step of 2/255 in the companded domain, times dx/dy = ln(256) (1 + 255 |x|) / 255 at the step's far end
    bound = (1 / 255) * math.log(256) / 255 * (1 + 255 * (x.abs() + 1 / 255 * math.log(256) * (1 + 255 * x.abs()) / 255))
    assert (err <= bound * 1.01 + 1e-7).all(), (err / bound).max()
    assert mu_law_encode(torch.tensor([-1.0, 0.0, 1.0, 3.0])).tolist() == [0, 128, 255, 255]  # clipped
    assert torch.equal(mu_law_encode(mu_law_decode(torch.arange(256))), torch.arange(256))  # levels are fixed points


@pytest.mark.parametrize("orig,new,freq", [(44100, 16000, 440.0), (22050, 16000, 3000.0), (8000, 16000, 1000.0),
                                           (48000, 16000, 6000.0)])
def test_resampled_sine_keeps_its_frequency(orig, new, freq):
    phase = float(torch.rand(1, generator=torch.Generator().manual_seed(orig)))
    x = torch.sin(2 * math.pi * freq * torch.arange(orig // 2, dtype=torch.float64) / orig + phase)
    y = resample(x, orig, new)
    assert y.shape == (math.ceil(x.numel() * new / orig),) and y.dtype == torch.float32
    expected = torch.sin(2 * math.pi * freq * torch.arange(y.numel(), dtype=torch.float64) / new + phase)
    inner = slice(100, -100)  # the edges see zero padding
    assert (y[inner] - expected[inner]).abs().max() < 2e-3
    spectrum = torch.fft.rfft(y[inner].double()).abs()
    peak_hz = spectrum.argmax().item() * new / y[inner].numel()
    assert abs(peak_hz - freq) <= new / y[inner].numel()


def test_resampling_removes_what_would_alias():
    x = torch.sin(2 * math.pi * 9000 * torch.arange(22050) / 44100)  # above the new Nyquist of 8 kHz
    y = resample(x, 44100, 16000)
    assert y[100:-100].pow(2).mean().sqrt() < 1e-3
    assert resample(x, 44100, 44100) is x
    batch = torch.randn(3, 2, 500)
    assert resample(batch, 16000, 8000).shape == (3, 2, 250)


def test_unreachable_sample_rate_is_an_error():
    with pytest.raises(ValueError, match="cannot resample 44100 Hz to 16001 Hz.*16001 filter phases"):
        resample(torch.zeros(10), 44100, 16001)
    with pytest.raises(ValueError, match="new_rate=0"):
        resample(torch.zeros(10), 44100, 0)
    with pytest.raises(ValueError, match="AudioConfig.sample_rate=-8000; must be a positive whole number"):
        AudioConfig(sample_rate=-8000).prepare()


# -- the generator and the folder path --------------------------------------------------------------------------
def test_synthetic_generator_is_deterministic_per_seed(tmp_path):
    a, b, c = piano_piece(3, 1, seconds=0.5), piano_piece(3, 1, seconds=0.5), piano_piece(4, 1, seconds=0.5)
    assert a.shape == (8000,) and a.dtype == np.float32 and np.array_equal(a, b) and not np.allclose(a, c)
    assert 0.85 < np.abs(a).max() <= 0.91 and a.std() > 0.05
    paths = write_pieces(tmp_path / "p", num_pieces=2, seconds=0.5, seed=3)
    assert list_audio_files(tmp_path / "p") == {"all": paths}  # found by datasets' audiofolder
    samples, rate = read_audio(paths[1])
    assert rate == 16000 and np.abs(samples - a).max() <= 1 / 32768 + 1e-7  # 16-bit PCM


def test_folder_tokens_equal_direct_decoding(tmp_path, cache):
    folder = tmp_path / "music"
    (folder / "sub").mkdir(parents=True)
    sine_file(folder / "a.wav", 22050, freq=300)
    sine_file(folder / "sub" / "b.flac", 8000, freq=500)
    sine_file(folder / "c.wav", 16000, freq=700)
    (folder / "notes.txt").write_text("not audio")
    cfg = AudioConfig(source="folder", data_dir=str(folder), cache_dir=cache, train_length=16, eval_lengths=[16],
                      val_fraction=1 / 3, test_fraction=1 / 3, shuffle_documents=False)
    cfg.prepare()
    splits = cfg.splits()
    for split, name in zip(["train", "validation", "test"], ["a.wav", "c.wav", "sub/b.flac"]):
        expected = audio_to_tokens(*read_audio(folder / name), 16000)
        assert np.array_equal(splits[split].tokens, expected), split
    assert len(splits["train"]) == math.ceil(0.3 * 22050 * 16000 / 22050)


def test_corpus_is_cached_and_shared(cache, monkeypatch):
    first = small(cache)
    first.prepare()
    path = first.corpus_path()
    assert (path / "corpus.json").exists() and (path / "dataset_info.json").exists()  # datasets' save_to_disk
    again = small(cache)
    monkeypatch.setattr(AudioConfig, "build", lambda self: pytest.fail("rebuilt a cached corpus"))
    assert again.corpus_path() == path
    assert np.array_equal(again.splits()["train"].tokens, first.splits()["train"].tokens)
    assert small(cache, sample_rate=8000).corpus_path() != path  # another rate: another entry


def test_own_split_folders_are_used(tmp_path, cache):
    for split, n in [("train", 2), ("validation", 1), ("test", 1)]:
        (tmp_path / split).mkdir()
        for i in range(n):
            sine_file(tmp_path / split / f"{i}.wav", 16000, freq=200 + 100 * i)
    cfg = AudioConfig(source="folder", data_dir=str(tmp_path), cache_dir=cache, train_length=16, eval_lengths=[16])
    cfg.prepare()
    assert [len(cfg.splits()[s].lengths) for s in ("train", "validation", "test")] == [2, 1, 1]


# -- windows ------------------------------------------------------------------------------------------------------
def test_windows_are_next_sample_pairs_inside_one_file():
    tokens = (np.arange(100) % 256).astype(np.uint8)  # token value = its position: windows show where they are
    corpus = TokenCorpus(tokens, np.array([0, 10, 13, 60, 100]))
    g = torch.Generator().manual_seed(0)
    x, y = sample_windows(corpus, g, batch_size=500, length=8, cross_documents=False)
    assert x.shape == y.shape == (500, 8) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1)  # the target is the next sample
    starts = x[:, 0].numpy()
    assert not ((starts > 1) & (starts < 13)).any()  # no window of 9 fits in [10, 13); none crosses 10 or 60
    assert not ((starts > 51) & (starts < 60)).any() and starts.max() <= 91 and starts.min() >= 0
    assert len(set(starts.tolist())) > 50  # all valid starts are used
    x, _ = sample_windows(corpus, torch.Generator().manual_seed(0), 500, 8, cross_documents=True)
    assert ((x[:, 0] > 51) & (x[:, 0] < 60)).any()  # packed: windows may cross documents
    with pytest.raises(ValueError, match="no window of 48 tokens fits"):
        sample_windows(corpus, g, 1, 47, cross_documents=False)


def test_generate_is_seeded_and_eval_ignores_the_run_seed(cache):
    cfg = small(cache)
    a = cfg.generate(seed=0, split="train", step=3, batch_size=4, length=64)
    assert torch.equal(a[0], cfg.generate(seed=0, split="train", step=3, batch_size=4, length=64)[0])
    assert not torch.equal(a[0], cfg.generate(seed=1, split="train", step=3, batch_size=4, length=64)[0])
    v0 = cfg.generate(seed=0, split="val", step=0, batch_size=4, length=128)
    v1 = cfg.generate(seed=5, split="val", step=0, batch_size=4, length=128)
    assert torch.equal(v0[0], v1[0]) and torch.equal(v0[1][:, :-1], v0[0][:, 1:])
    with pytest.raises(ValueError, match="split='dev'"):
        cfg.generate(seed=0, split="dev", step=0, batch_size=1, length=8)


# -- errors -------------------------------------------------------------------------------------------------------
def test_folder_without_audio_is_an_error(tmp_path, cache):
    (tmp_path / "readme.txt").write_text("no audio here")
    with pytest.raises(FileNotFoundError, match="no audio files"):
        AudioConfig(source="folder", data_dir=str(tmp_path), cache_dir=cache).prepare()
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        AudioConfig(source="folder", data_dir=str(tmp_path / "missing"), cache_dir=cache).prepare()
    with pytest.raises(ValueError, match="needs data_dir"):
        AudioConfig(source="folder").prepare()
    with pytest.raises(ValueError, match="source='youtube'; allowed"):
        AudioConfig(source="youtube").prepare()


def test_unreadable_file_error_or_skip(tmp_path, cache, caplog):
    for i in range(3):
        sine_file(tmp_path / f"good{i}.wav", 16000, freq=300 + 50 * i)
    (tmp_path / "broken.wav").write_bytes(b"RIFF\x00\x00not a wave file")
    args = {"source": "folder", "data_dir": str(tmp_path), "cache_dir": cache, "train_length": 16,
            "eval_lengths": [16], "val_fraction": 0.25, "test_fraction": 0.25}
    with pytest.raises(ValueError, match=r"1 unreadable file\(s\).*broken\.wav.*on_bad_file=skip"):
        AudioConfig(**args).prepare()
    with caplog.at_level(logging.WARNING):
        cfg = AudioConfig(**args, on_bad_file="skip")
        cfg.prepare()
    assert "broken.wav" in caplog.text
    assert sum(len(c) for c in cfg.splits().values()) == 3 * 4800  # three 0.3 s files, the bad one left out
    with pytest.raises(ValueError, match="on_bad_file='ignore'; allowed: error, skip"):
        AudioConfig(**{**args, "on_bad_file": "ignore"}).prepare()


def test_every_file_unreadable_is_an_error_even_when_skipping(tmp_path, cache):
    (tmp_path / "x.wav").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="no readable documents.*x.wav"):
        AudioConfig(source="folder", data_dir=str(tmp_path), cache_dir=cache, on_bad_file="skip").prepare()


def test_window_longer_than_every_file_is_an_error(cache):
    with pytest.raises(ValueError, match=r"eval_lengths=8000: a window of 8001 tokens is longer than every file of "
                                         r"the validation split .*longest: 8000 tokens = 0.500 s at 16000 Hz"):
        small(cache, eval_lengths=[64, 8000]).prepare()


def test_file_at_an_unreachable_rate_is_an_error_naming_it(tmp_path, cache):
    sine_file(tmp_path / "odd.wav", 16001)
    with pytest.raises(ValueError, match=r"odd\.wav: cannot resample 16001 Hz to 16000 Hz"):
        AudioConfig(source="folder", data_dir=str(tmp_path), cache_dir=cache).prepare()
    with pytest.raises(ValueError, match=r"piece_0000\.wav: cannot resample 16000 Hz to 16001 Hz"):
        small(cache, sample_rate=16001).prepare()
    for i in range(3):  # the same odd rate everywhere needs no resampling at all
        sine_file(tmp_path / f"odd{i}.wav", 16001)
    AudioConfig(source="folder", data_dir=str(tmp_path), cache_dir=cache, sample_rate=16001, train_length=16,
                eval_lengths=[16], val_fraction=0.25, test_fraction=0.25).prepare()


# -- the data module ----------------------------------------------------------------------------------------------
def test_datamodule_resume_continues_the_stream(cache):
    def dm():
        return CorpusDataModule(small(cache), batch_size=3, eval_batches=2, seed=7)

    fresh, _ = assert_resumes(dm)
    assert fresh.eval_names == ["L64", "L128"] and fresh.bytes_per_token == 1.0 and fresh.vocab_size == 256
    val = [list(loader) for loader in fresh.val_dataloader()]
    assert [x.shape for x, _ in val[1]] == [(3, 128), (3, 128)]
    assert [x.shape for x, _ in val[0]] == [(6, 64), (6, 64)]  # the same 128-long windows cut in two
    for (x64, y64), (x128, y128) in zip(*val):  # every length scores the same samples, with less context
        assert torch.equal(y64.reshape(3, 128), y128) and torch.equal(x64.reshape(3, 128), x128)
    with pytest.raises(TypeError, match="CorpusDataModule serves real-data tasks"):
        CorpusDataModule({"_target_": "hybrid.tasks.mqar.MQARConfig"})


def test_tiny_training_run(tmp_path, cache):
    from hydra import compose, initialize_config_dir

    from hybrid.train import train

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[
            "experiment=smoke", "task=audio", f"task.cache_dir={cache}", "task.synth_pieces=6",
            "task.synth_seconds=0.5", "task.val_fraction=0.17", "task.test_fraction=0.17",
            "task.train_length=32", "task.eval_lengths=[32,64]", "trainer.max_steps=2",
            "trainer.val_check_interval=2", "++model.layer_overrides={0: {selective: false}}", f"run_dir={tmp_path}"])
    result = train(cfg)
    assert result["status"] == "completed" and result["step"] == 2
    for name in ("L32", "L64"):
        loss = result["metrics"][f"val/loss_{name}"]
        assert math.isfinite(loss) and loss < math.log(256) + 0.5  # near uniform after 2 steps, not diverged


def test_spoken_digits_need_espeak_ng(tmp_path, monkeypatch):
    import shutil

    from hybrid.tasks import audio_synth

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="needs the espeak-ng program.*apt-get install espeak-ng"):
        audio_synth.write_spoken_digits(tmp_path, count=2)


@pytest.mark.skipif(__import__("shutil").which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_spoken_digits_corpus(cache):
    cfg = AudioConfig(source="spoken_digits", digits_count=6, cache_dir=cache, train_length=64, eval_lengths=[64],
                      val_fraction=0.2, test_fraction=0.2)
    cfg.prepare()
    files = sorted(cfg.folder().glob("*.wav"))
    assert len(files) == 6 and all(f.stem.split("_")[0] in audio_synth_digits() for f in files)
    samples, rate = read_audio(files[0])
    assert rate == 22050 and samples.size == 22050 and np.abs(samples).max() > 0.05  # padded to 1 s, not silent
    assert sum(len(c) for c in cfg.splits().values()) == 6 * 16000  # resampled to 16 kHz


def audio_synth_digits():
    from hybrid.tasks.audio_synth import DIGITS
    return DIGITS
