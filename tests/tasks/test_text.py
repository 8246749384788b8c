"""Byte-level text task: the stdlib default, files and datasets sources, packed windows, errors, resume, training."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("datasets")

from hybrid.tasks.corpus_datamodule import CorpusDataModule
from hybrid.tasks.text import TextConfig, expand_paths, stdlib_files

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


@pytest.fixture
def corpus_dir(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.txt").write_bytes(b"alpha " * 50)
    (tmp_path / "b" / "c.md").write_text("gr\u00fc\u00dfe " * 40, encoding="utf-8")  # multi-byte UTF-8
    (tmp_path / "z.txt").write_bytes(bytes(range(256)))
    return tmp_path


def joined(cfg):
    return np.concatenate([cfg.splits()[s].tokens for s in ("train", "validation", "test")])


def test_stdlib_default_is_the_sorted_stdlib_bytes(cache):
    cfg = TextConfig(cache_dir=cache, train_length=64, eval_lengths=[64, 128])
    cfg.prepare()
    files = stdlib_files()
    assert len(files) > 50 and files == sorted(files) and all(f.suffix == ".py" for f in files)
    expected = np.frombuffer(b"".join(f.read_bytes() for f in files), dtype=np.uint8)
    assert np.array_equal(joined(cfg), expected)  # packed in order, nothing lost at the cuts
    sizes = {s: len(c) for s, c in cfg.splits().items()}
    assert abs(sizes["validation"] / expected.size - 0.05) < 1e-3 and abs(sizes["test"] / expected.size - 0.05) < 1e-3
    x, y = cfg.generate(seed=0, split="train", step=0, batch_size=3, length=64)
    assert x.shape == y.shape == (3, 64) and torch.equal(x[:, 1:], y[:, :-1])
    text = bytes(x[0].tolist()) + bytes([y[0, -1].item()])
    assert text in expected.tobytes()  # a window is 65 consecutive bytes of the corpus


def test_files_folders_and_globs(corpus_dir, cache):
    assert expand_paths([str(corpus_dir)]) == [corpus_dir / "a.txt", corpus_dir / "b" / "c.md", corpus_dir / "z.txt"]
    assert expand_paths([str(corpus_dir / "*.txt"), str(corpus_dir / "a.txt")]) == [corpus_dir / "a.txt",
                                                                                     corpus_dir / "z.txt"]
    cfg = TextConfig(source="files", paths=[str(corpus_dir)], cache_dir=cache, train_length=8, eval_lengths=[8],
                     val_fraction=0.2, test_fraction=0.2)
    cfg.prepare()
    raw = (corpus_dir / "a.txt").read_bytes() + (corpus_dir / "b" / "c.md").read_bytes() + bytes(range(256))
    assert np.array_equal(joined(cfg), np.frombuffer(raw, dtype=np.uint8))
    windows = torch.cat([cfg.generate(seed=0, split="train", step=s, batch_size=64, length=8)[0] for s in range(4)])
    assert windows.max() > 127  # raw bytes: the UTF-8 of "ü" and "ß" is two bytes each, above 127
    capped = TextConfig(source="files", paths=[str(corpus_dir)], cache_dir=cache, train_length=8, eval_lengths=[8],
                        max_bytes=100, val_fraction=0.2, test_fraction=0.2)
    capped.prepare()
    assert joined(capped).tobytes() == raw[:100] and capped.corpus_path() == cfg.corpus_path()


def test_datasets_source_offline(tmp_path, cache):
    rows = [{"text": "first document\n", "id": 1}, {"text": "", "id": 2}, {"text": "zweite Stra\u00dfe " * 20, "id": 3}]
    data = tmp_path / "docs.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    cfg = TextConfig(source="hf", hf_path="json", hf_data_files=[str(data)], cache_dir=cache, train_length=8,
                     eval_lengths=[8], val_fraction=0.2, test_fraction=0.2)
    cfg.prepare()
    expected = "".join(r["text"] for r in rows).encode("utf-8")
    assert joined(cfg).tobytes() == expected
    with pytest.raises(ValueError, match="text_column='body' is not a column.*\\['text', 'id'\\]"):
        TextConfig(source="hf", hf_path="json", hf_data_files=str(data), text_column="body", cache_dir=cache,
                   train_length=8, eval_lengths=[8]).prepare()


def test_errors(tmp_path, cache):
    with pytest.raises(FileNotFoundError, match="is not a file, folder or glob pattern with matches"):
        TextConfig(source="files", paths=[str(tmp_path / "nope.txt")], cache_dir=cache).prepare()
    with pytest.raises(ValueError, match="needs paths"):
        TextConfig(source="files").prepare()
    with pytest.raises(ValueError, match="needs hf_path"):
        TextConfig(source="hf").prepare()
    with pytest.raises(ValueError, match="source='web'; allowed: stdlib, files, hf"):
        TextConfig(source="web").prepare()
    with pytest.raises(ValueError, match="vocab_size=300; byte tokens need 256"):
        TextConfig(vocab_size=300).prepare()
    with pytest.raises(ValueError, match="val_fraction \\+ test_fraction = 1.0"):
        TextConfig(val_fraction=0.5, test_fraction=0.5).prepare()
    (tmp_path / "short.txt").write_bytes(b"x" * 200)
    with pytest.raises(ValueError, match="eval_lengths=64: a window of 65 tokens is longer than the whole "
                                         "validation split .*\\(10 tokens\\)"):
        TextConfig(source="files", paths=[str(tmp_path / "short.txt")], cache_dir=cache, train_length=32,
                   eval_lengths=[64]).prepare()
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(ValueError, match="no readable documents"):
        TextConfig(source="files", paths=[str(tmp_path / "empty.txt")], cache_dir=cache).prepare()


def test_datamodule_resume_continues_the_stream(corpus_dir, cache):
    def dm():
        task = TextConfig(source="files", paths=[str(corpus_dir)], cache_dir=cache, train_length=16,
                          eval_lengths=[16], val_fraction=0.2, test_fraction=0.2)
        return CorpusDataModule(task, batch_size=4, eval_batches=2, seed=3)

    reference = [b for _, b in zip(range(5), iter(dm().train_dataloader()))]
    first = dm()
    stream = iter(first.train_dataloader())
    next(stream), next(stream)
    fresh = dm()
    fresh.load_state_dict(first.state_dict())
    resumed = iter(fresh.train_dataloader())
    for expected in reference[2:]:
        got = next(resumed)
        assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_tiny_training_run(tmp_path, cache):
    from hydra import compose, initialize_config_dir

    from hybrid.train import train

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[
            "experiment=smoke", "task=text", f"task.cache_dir={cache}", "task.max_bytes=200000",
            "task.train_length=32", "task.eval_lengths=[32,64]", "trainer.max_steps=2",
            "trainer.val_check_interval=2", f"run_dir={tmp_path}"])
    result = train(cfg)
    assert result["status"] == "completed" and result["step"] == 2
    assert all(math.isfinite(result["metrics"][f"val/loss_{n}"]) for n in ("L32", "L64"))
    for n in ("L32", "L64"):  # one token is one byte: bits per byte = nats per token / ln 2
        assert math.isclose(result["metrics"][f"val/bpb_{n}"], result["metrics"][f"val/loss_{n}"] / math.log(2),
                            rel_tol=1e-5)
