"""`python -m hybrid.generate`: sample from a trained or converted model, or read its answers to task prompts.

    python -m hybrid.generate run_dir=runs/<a run> prompt_task=mqar num_samples=4
    python -m hybrid.generate model=from_checkpoint model.path=OUT_DIR "prompt='def fib(n):'" max_new_tokens=200 \
        temperature=0.8

The model: a training run's directory (its config.yaml and checkpoints/last.ckpt), or any model config
(`model=from_checkpoint model.path=DIR` for a converted checkpoint). The prompt: `prompt` (text, fed as UTF-8
bytes: a byte-level model, vocab >= 256), `prompt_tokens` (token ids), or `prompt_task` (a task's sequences: the
model reads each one through the inference cache and its greedy token at every answer position is printed beside
the truth, with the accuracy). `run(cfg)` does the work and returns what it printed, for tests and scripts.
"""
import logging
from pathlib import Path

import hydra
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hybrid.model import HybridLM
from hybrid.tasks import IGNORE_INDEX, TASKS, TaskConfig

log = logging.getLogger(__name__)


def load_run(run_dir: str | Path) -> tuple[HybridLM, DictConfig]:
    """The model of a training run with the weights of its checkpoints/last.ckpt, and the run's config."""
    run_dir = Path(run_dir)
    config, ckpt = run_dir / "config.yaml", run_dir / "checkpoints" / "last.ckpt"
    for path in (config, ckpt):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: run_dir must be a training run's directory "
                                    f"(config.yaml and checkpoints/last.ckpt)")
    cfg = OmegaConf.load(config)
    model = instantiate(cfg.model)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    prefix = "model."
    weights = {k[len(prefix):].replace("_orig_mod.", ""): v for k, v in state.items() if k.startswith(prefix)}
    model.load_state_dict(weights)
    return model, cfg


def run_task_config(cfg: DictConfig | None) -> TaskConfig | None:
    """The TaskConfig of a run's config: `task` (a TaskConfig) or, in configs written before the rename, `task.task`."""
    if cfg is None or "task" not in cfg:
        return None
    node = cfg.task.task if "task" in cfg.task else cfg.task
    task = instantiate(node) if "_target_" in node else None
    return task if isinstance(task, TaskConfig) else None


def task_for(name: str, run_cfg: DictConfig | None) -> TaskConfig:
    """The run's own task config when it is task `name`, else that task's defaults."""
    if name not in TASKS:
        raise ValueError(f"prompt_task={name!r} is not a task; allowed: {', '.join(TASKS)}")
    task = run_task_config(run_cfg)
    return task if isinstance(task, TASKS[name]) else TASKS[name]()


@torch.no_grad()
def answer_task(model: HybridLM, inputs: torch.Tensor, targets: torch.Tensor) -> list[tuple[list, list]]:
    """Each sequence read through the inference cache in segments that end at its answer positions; at each the
    model's greedy token. inputs, targets [batch, L] -> per row (predicted answers, true answers)."""
    rows = []
    for x, y in zip(inputs, targets):
        positions = (y != IGNORE_INDEX).nonzero().flatten().tolist()
        cache = model.allocate_inference_cache(1, len(x))
        predicted, start = [], 0
        for p in positions:
            logits = model(x[None, start:p + 1], cache, logits_to_keep=1).logits[0, -1]
            predicted.append(int(logits.argmax()))
            start = p + 1
        rows.append((predicted, y[positions].tolist()))
    return rows


def text_prompt(text: str, vocab_size: int) -> list[int]:
    """A text prompt as UTF-8 byte tokens (a byte-level model: vocab_size >= 256)."""
    if vocab_size < 256:
        raise ValueError(f"prompt={text!r} is fed as UTF-8 bytes, which needs vocab_size >= 256; this model has "
                         f"{vocab_size}: give prompt_tokens=[...] or prompt_task=NAME instead")
    return list(text.encode("utf-8"))


def build_model(cfg: DictConfig) -> tuple[HybridLM, DictConfig | None]:
    if cfg.run_dir:
        return load_run(cfg.run_dir)
    if cfg.get("model") is None:
        raise ValueError("no model: give run_dir=DIR (a training run) or model=NAME (e.g. model=from_checkpoint "
                         "model.path=DIR)")
    return instantiate(cfg.model), None


def run(cfg: DictConfig) -> dict:
    """Generate as `cfg` (conf/generate.yaml) says; print and return the result."""
    device = torch.device(cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    model, run_cfg = build_model(cfg)
    model = model.to(device).eval()
    given = [k for k in ("prompt", "prompt_tokens", "prompt_task") if cfg.get(k) is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of prompt=TEXT, prompt_tokens=[ids], prompt_task=NAME; "
                         f"got {given or 'none'}")
    if cfg.prompt_task is not None:
        task = task_for(cfg.prompt_task, run_cfg)
        if task.vocab_size > model.vocab_size:
            raise ValueError(f"task {cfg.prompt_task} has vocab_size={task.vocab_size}, more than the model's "
                             f"{model.vocab_size}")
        length = int(cfg.prompt_length or task.train_length)
        inputs, targets = task.generate(seed=int(cfg.seed), split="test", step=0, batch_size=int(cfg.num_samples),
                                        length=length)
        rows = answer_task(model, inputs.to(device), targets.to(device))
        correct = sum(p == t for pred, truth in rows for p, t in zip(pred, truth))
        total = sum(len(truth) for _, truth in rows)
        for i, (pred, truth) in enumerate(rows):
            hits = sum(p == t for p, t in zip(pred, truth))
            print(f"sample {i}: predicted {pred}\n          truth     {truth}   ({hits}/{len(truth)})")
        accuracy = correct / max(total, 1)
        print(f"accuracy {accuracy:.4f} ({correct}/{total} answers, task {cfg.prompt_task}, L={length})")
        return {"rows": rows, "accuracy": accuracy}
    tokens = (text_prompt(cfg.prompt, model.vocab_size) if cfg.prompt is not None
              else [int(t) for t in cfg.prompt_tokens])
    bad = [t for t in tokens if not 0 <= t < model.vocab_size]
    if not tokens or bad:
        raise ValueError(f"prompt tokens must be 1 or more ids in 0..{model.vocab_size - 1}; got {tokens}")
    out = model.generate([tokens] * int(cfg.num_samples), int(cfg.max_new_tokens), temperature=float(cfg.temperature),
                         top_k=cfg.top_k, top_p=cfg.top_p, eos_token_id=cfg.eos_token_id, seed=cfg.seed)
    samples = [row[len(tokens):].tolist() for row in out.cpu()]
    for i, s in enumerate(samples):
        if cfg.prompt is not None:
            print(f"--- sample {i}\n{cfg.prompt}{bytes(t for t in s if t < 256).decode('utf-8', errors='replace')}")
        else:
            print(f"--- sample {i}: {tokens} -> {s}")
    return {"prompt": tokens, "samples": samples}


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def main(cfg: DictConfig) -> dict:
    return run(cfg)


if __name__ == "__main__":
    main()
