"""Usage errors of a run's config, found when the run is built and before anything is written.

`check_run(cfg)` (hybrid.train) and `check_model(cfg.model)` (hybrid.train, hybrid.describe) raise UsageError, a
ValueError whose message is one paragraph naming the key, its value and what is allowed. The command-line
entry points print it and exit with status 2, without a traceback (`exit_on_usage_error`).
"""
import functools
import sys

from omegaconf import DictConfig, OmegaConf

USAGE_EXIT = 2  # as argparse: the command was wrong, nothing ran


class UsageError(ValueError):
    """A value the user gave that cannot run; the message names it and what is allowed."""


def check_int(key: str, value, minimum: int | None = 1, allow_none: bool = False) -> None:
    """value is an integer >= minimum (None allowed with allow_none); else a UsageError naming key and value."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        try:
            ok = float(value).is_integer()
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UsageError(f"{key}={value!r} is not an integer; {key} must be an integer"
                             + (f" >= {minimum}" if minimum is not None else "") + ".")
        value = int(float(value))
    if minimum is not None and value < minimum:
        raise UsageError(f"{key}={value} is out of range; {key} must be an integer >= {minimum}.")


def _positive(key: str, value) -> None:
    """value > 0. Infinity passes: it is a (bad) learning rate whose NaN the run reports with its step."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise UsageError(f"{key}={value!r} is not a number; {key} must be a number > 0.") from None
    if not number > 0:  # NaN fails this too
        raise UsageError(f"{key}={value} is out of range; {key} must be a number > 0.")


def _get(cfg, key: str):
    return OmegaConf.select(cfg, key, default=None)


def check_model(model: DictConfig, prefix: str = "model") -> None:
    """Sizes >= 1 and known backends in a model config (conf/model/*.yaml, conf/block/*.yaml)."""
    if model is None or "d_model" not in model:  # model=from_checkpoint: the checkpoint holds the sizes
        return
    check_int(f"{prefix}.d_model", model.d_model)
    for symbol, block in (model.get("blocks") or {}).items():
        name = f"{prefix}.blocks.{symbol}"
        for key in ("d_state", "d_conv", "expand", "n_heads", "n_experts", "top_k", "head_dim", "n_groups",
                    "chunk_size"):
            if key in block:
                check_int(f"{name}.{key}", block[key])
        for key in ("n_kv_heads", "d_hidden"):
            if key in block:
                check_int(f"{name}.{key}", block[key], allow_none=True)
        if "scan_backend" in block:
            from hybrid.kernels.selective_scan import BACKENDS
            if block.scan_backend not in BACKENDS:
                raise UsageError(f"{name}.scan_backend={block.scan_backend!r} is not a scan backend; allowed: "
                                 f"{', '.join(BACKENDS)}.")
        if "backend" in block and symbol == "A":
            from hybrid.kernels.attention import BACKENDS as ATTENTION
            if block.backend not in ATTENTION:
                raise UsageError(f"{name}.backend={block.backend!r} is not an attention backend; allowed: "
                                 f"{', '.join(ATTENTION)}.")


def check_run(cfg: DictConfig) -> None:
    """The run-level keys of conf/train.yaml: seed, steps, intervals, learning rate, resume."""
    check_int("seed", cfg.seed, minimum=0)
    check_int("checkpoint_every", cfg.checkpoint_every)
    check_int("trainer.max_steps", _get(cfg, "trainer.max_steps"))
    interval = _get(cfg, "trainer.val_check_interval")
    if isinstance(interval, float) and not interval.is_integer():
        if not 0 < interval <= 1:
            raise UsageError(f"trainer.val_check_interval={interval} is out of range; a fraction must be in (0, 1], "
                             f"a number of steps an integer >= 1.")
    else:
        check_int("trainer.val_check_interval", interval, allow_none=True)
    _positive("lit.optimizer.lr", _get(cfg, "lit.optimizer.lr"))
    resume = cfg.get("resume")
    if resume not in (None, "force"):
        raise UsageError(f"resume={resume!r}; allowed: force (resume although the config changed), or leave it out.")
    check_model(cfg.model)


def exit_on_usage_error(main):
    """Wrap a command's main: a UsageError is printed as `error: ...` on stderr and exits with status 2."""
    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UsageError as e:
            print(f"error: {e}", file=sys.stderr)
            raise SystemExit(USAGE_EXIT) from None
    return wrapped
