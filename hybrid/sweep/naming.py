"""The name of a run directory: the one place it is defined.

A run is named by the overrides that make it (as Hydra's `override_dirname` joins them: the overrides whose keys
are not excluded, sorted, joined by `,`), or `default` when there are none. The name is derived from the
command, not the clock, so re-running a command finds its run directory (and its checkpoint) again. A name over
MAX_NAME bytes keeps its start and ends in a hash of the whole (`python -m hybrid.train` with many overrides failed
with 'File name too long').

Who calls `run_name`:
  conf/train.yaml    hydra.run.dir = runs/${run_name:${hydra:job.override_dirname}}, and hydra.sweep.subdir
  point_names        the points a multirun will make (the sweep summary lists those that never started,
                     hybrid.sweep.recipe names a recipe's points)
`sweep_name` names a plain multirun's sweep directory from its overrides the same way, so that two different
sweeps do not share one directory (and one summary).
"""
import hashlib
import itertools
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

CONF = Path(__file__).resolve().parents[2] / "conf"
DEFAULT = "default"
MAX_NAME = 200  # bytes of a run directory's name


def run_name(override_dirname: str) -> str:
    """The run directory's name from Hydra's override_dirname: the overrides, or "default" when there are none.
    A name longer than MAX_NAME bytes (file systems refuse components over 255) keeps its start and ends in a hash
    of the whole, so that it stays unique and the same command still finds its run directory."""
    name = override_dirname or DEFAULT
    if len(name.encode()) <= MAX_NAME:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    return name.encode()[:MAX_NAME - len(digest) - 1].decode(errors="ignore") + "-" + digest


def override_dirname(lines: list[str], exclude_keys: set[str], item_sep: str = ",", kv_sep: str = "=") -> str:
    """What Hydra's job.override_dirname is for these override lines (its rule: keys not excluded, the lines
    sorted and joined; `=` written as kv_sep)."""
    parser = OverridesParser.create()
    kept = sorted(o.input_line for o in parser.parse_overrides(list(lines)) if o.key_or_group not in exclude_keys)
    return item_sep.join(kept).replace("=", kv_sep)


def expand(overrides: list[str]) -> list[list[str]]:
    """The jobs of a basic-sweeper multirun of `overrides`: the product of the comma sweeps, in Hydra's order
    (the first override varies slowest; a key given twice keeps its last value). Range and glob sweeps are a
    ValueError (they need the config to expand)."""
    parser = OverridesParser.create()
    axes: dict[str, list[str]] = {}
    for override in parser.parse_overrides(list(overrides)):
        key = override.get_key_element()
        if not override.is_sweep_override():
            axes[key] = [f"{key}={override.get_value_element_as_str()}"]
        elif override.is_discrete_sweep():
            axes[key] = [f"{key}={value}" for value in override.sweep_string_iterator()]
        else:
            raise ValueError(f"cannot expand the sweep {override.input_line!r} without the config")
    return [list(job) for job in itertools.product(*axes.values())]


def point_names(overrides: list[str], exclude_keys: set[str], item_sep: str = ",", kv_sep: str = "=") -> list[str]:
    """The run-directory names of the points of a multirun of `overrides`."""
    return [run_name(override_dirname(job, exclude_keys, item_sep, kv_sep)) for job in expand(overrides)]


def sweep_name(overrides: list[str], exclude_keys: set[str]) -> str:
    """A plain multirun's sweep directory name: its overrides (sweeps included, as typed), or "default"."""
    return run_name(override_dirname(overrides, exclude_keys))


def exclude_keys() -> list[str]:
    """conf/train.yaml's override_dirname.exclude_keys: keys that never name a run (launcher, device, run_dir)."""
    train = yaml.safe_load((CONF / "train.yaml").read_text())
    return list(train["hydra"]["job"]["config"]["override_dirname"]["exclude_keys"])


def register_resolvers() -> None:
    """${run_name:...} for conf/train.yaml; called on import of this module."""
    OmegaConf.register_new_resolver("run_name", run_name, replace=True)


register_resolvers()
