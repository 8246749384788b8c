"""Sweep recipes (sweeps/*.yaml): which multirun makes a figure, and where its runs live.

A recipe names the overrides of its multirun and how to plot it:

    title: MQAR accuracy vs model width (Zoology, Fig. 2)
    default_profile: quick
    fixed: {task: mqar}                        # overrides of every point, in both profiles
    sweep: {model: [transformer_small, mamba_small]}   # axes: the multirun is their product
    profiles:                                  # merged over fixed/sweep, key by key
      quick: {fixed: {trainer.max_steps: 40}, sweep: {model.d_model: [16, 32]}}    # CPU, minutes
      paper: {fixed: {trainer.max_steps: 20000}, sweep: {model.d_model: [64, 128, 256, 512]}}
    metric: val/acc_L{task.train_length}  # see hybrid/figures.py for metric patterns and `plot`
    plot: {kind: line, x: model.d_model, hue: model, col: task.train_length}

`plan(recipe, ["profile=paper", "hydra/launcher=slurm", "seed=0,1"])` turns it into the multirun's command line:
`profile=` picks the profile; `hydra...` overrides pass to Hydra untouched; any other override replaces the
recipe's setting of that key (a sweep `a,b` becomes an axis, a single value a fixed setting).

Run directories: <sweep dir>/<point>, the sweep dir `multirun/<recipe>/<profile>` (with `-<hash>` of the extra
overrides when there are any, resource settings such as threads= and gpu_points= left out), each point named by its
axis values only (`model=mamba_small,seed=0`: the fixed overrides are left out of the names, so they stay short).
A re-run of the same command finds every point's run directory, skips completed points and resumes killed ones.
"""
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from hydra.core.override_parser.overrides_parser import OverridesParser

from hybrid.rundir import RUN_SETTINGS
from hybrid.sweep import naming

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
RECIPE_KEYS = {"name", "title", "description", "reference", "default_profile", "fixed", "sweep", "profiles",
               "metric", "plot", "notes", "expect", "chance", "bench"}
# expect / chance / smoke: hybrid/expectations.py and hybrid/figures.py; steps_per_s: the measured training
# speed of one point (steps per second), for `reproduce --dry-run`'s cost estimate
# bench: result files a recipe draws instead of training runs (hybrid/bench_records.py; nothing is trained)
PROFILE_KEYS = {"fixed", "sweep", "description", "expect", "chance", "smoke", "steps_per_s", "bench"}


def bare(key: str) -> str:
    """An override key without Hydra's prefixes: ++model.x -> model.x (how Hydra's override_dirname matches)."""
    return key.lstrip("+~")


def render(value) -> str:
    """A YAML value as Hydra override text: True -> true, None -> null, [64, 128] -> [64,128]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{render(v)}" for k, v in value.items()) + "}"
    return str(value)


def render_axis(values) -> str:
    """Axis values as a Hydra sweep: [0, 1] -> "0,1"; a string is taken as written ("range(0,3)")."""
    if isinstance(values, str):
        return values
    if not isinstance(values, (list, tuple)) or not values:
        raise ValueError(f"a sweep axis must be a non-empty list of values or a Hydra sweep string, got {values!r}")
    return ",".join(render(v) for v in values)


@dataclass
class Recipe:
    name: str
    path: Path
    title: str
    description: str
    default_profile: str
    fixed: dict
    sweep: dict
    profiles: dict
    metric: object
    plot: dict
    reference: str = ""
    expect: list = field(default_factory=list)   # the published finding, checked (hybrid/expectations.py)
    chance: object = None                        # the metric's chance level: a number or {metric label: number}


def load(path: str | Path) -> Recipe:
    """Read and check a recipe; errors name the file, the bad key and what is allowed."""
    path = Path(path)
    if not path.exists() and not path.suffix and (ROOT / "sweeps" / f"{path}.yaml").exists():
        path = ROOT / "sweeps" / f"{path}.yaml"  # `mqar_vs_width` for sweeps/mqar_vs_width.yaml
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml")))
        raise FileNotFoundError(f"no recipe {path}; the recipes in sweeps/: {known}")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - RECIPE_KEYS
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; allowed: {sorted(RECIPE_KEYS)}")
    profiles = data.get("profiles") or {}
    if not profiles:
        raise ValueError(f"{path}: no profiles; a recipe needs at least `profiles: {{quick: ..., paper: ...}}`")
    for name, profile in profiles.items():
        bad = set(profile or {}) - PROFILE_KEYS
        if bad:
            raise ValueError(f"{path}: profile {name!r} has unknown keys {sorted(bad)}; "
                             f"allowed: {sorted(PROFILE_KEYS)}")
    default = data.get("default_profile", "quick" if "quick" in profiles else next(iter(profiles)))
    if default not in profiles:
        raise ValueError(f"{path}: default_profile {default!r} is not one of the profiles {sorted(profiles)}")
    if "metric" not in data or "plot" not in data:
        raise ValueError(f"{path}: a recipe needs `metric` and `plot` (see hybrid/figures.py)")
    from hybrid import expectations
    expect = expectations.parse(data.get("expect"), str(path))
    for name, profile in profiles.items():
        expectations.parse((profile or {}).get("expect"), f"{path} profile {name}")
    return Recipe(name=data.get("name", path.stem), path=path, title=data.get("title", path.stem),
                  description=data.get("description", ""), default_profile=default,
                  fixed=dict(data.get("fixed") or {}), sweep=dict(data.get("sweep") or {}), profiles=profiles,
                  metric=data["metric"], plot=dict(data["plot"]), reference=data.get("reference", ""),
                  expect=expect, chance=data.get("chance"))


@dataclass
class Plan:
    """One profile of a recipe with the user's extra overrides: the multirun to launch and where it lives."""
    recipe: Recipe
    profile: str
    fixed: dict                  # key -> override text of its value
    axes: dict                   # key -> Hydra sweep text
    hydra: list = field(default_factory=list)   # hydra/... and hydra.* overrides, passed through
    extra: list = field(default_factory=list)   # the user's task overrides (they name the sweep dir)
    sweep_dir: Path = None

    @property
    def settings(self) -> dict:
        """The profile's own entry of the recipe."""
        return self.recipe.profiles[self.profile] or {}

    @property
    def smoke(self) -> bool:
        """A smoke profile checks that the pipeline runs, not the finding (default: the profile named quick)."""
        return bool(self.settings.get("smoke", self.profile == "quick"))

    @property
    def expect(self) -> list[dict]:
        """The expectations of this profile: its own `expect`, else the recipe's."""
        return self.settings.get("expect", self.recipe.expect) or []

    @property
    def chance(self):
        return self.settings.get("chance", self.recipe.chance)

    @property
    def bench(self):
        """The bench result files this profile draws (a recipe of measurements), or None (a training sweep)."""
        return self.settings.get("bench")

    def overrides(self) -> list[str]:
        """The task overrides of the multirun: fixed settings, then axes."""
        return [k if v is None else f"{k}={v}" for k, v in [*self.fixed.items(), *self.axes.items()]]

    def exclude_keys(self) -> list[str]:
        """conf/train.yaml's override_dirname.exclude_keys plus the fixed keys: points are named by their axes."""
        return list(dict.fromkeys([*naming.exclude_keys(), *(bare(k) for k in self.fixed)]))

    def hydra_overrides(self) -> list[str]:
        out = [f"hydra.sweep.dir={self.sweep_dir}",
               "hydra.job.config.override_dirname.exclude_keys=[" + ",".join(self.exclude_keys()) + "]"]
        return out + [h for h in self.hydra if not h.startswith("hydra.sweep.dir=")]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "hybrid.train", "-m", *self.overrides(), *self.hydra_overrides()]

    def point_names(self) -> list[str]:
        """The run-dir name of every point, as Hydra will name them (hybrid.sweep.naming)."""
        return naming.point_names(self.overrides(), set(self.exclude_keys()))

    def probes(self) -> list[list[str]]:
        """Override lists that together use every value of every axis once (the first value of the other
        axes): composing them checks each setting of the sweep without composing the whole product."""
        parser = OverridesParser.create()
        firsts, values = {}, {}
        for key, text in self.axes.items():
            override = parser.parse_override(f"{key}={text}")
            values[key] = list(override.sweep_string_iterator()) if override.is_sweep_override() else [
                override.get_value_element_as_str()]
            firsts[key] = values[key][0]
        fixed = [k if v is None else f"{k}={v}" for k, v in self.fixed.items()]
        probes = [fixed + [f"{k}={v}" for k, v in firsts.items()]]
        for key, vals in values.items():
            for v in vals[1:]:
                probes.append(fixed + [f"{k}={v if k == key else firsts[k]}" for k in firsts])
        return probes


def split_args(argv: list[str]) -> tuple[str, str | None, list[str]]:
    """`RECIPE [profile=NAME] [overrides...]` -> (recipe, profile or None, overrides)."""
    if not argv or "=" in argv[0]:
        raise SystemExit("usage: RECIPE [profile=quick|paper] [hydra/launcher=...] [key=value ...]; "
                         "RECIPE is a file such as sweeps/mqar_vs_width.yaml")
    profile, rest = None, []
    for arg in argv[1:]:
        if arg.startswith("profile="):
            profile = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return argv[0], profile, rest


def plan(recipe: Recipe | str | Path, args: list[str] = (), profile: str | None = None,
         base_dir: str | Path = "multirun") -> Plan:
    """The multirun of `recipe` in `profile` (default: the recipe's default_profile) with extra overrides."""
    if not isinstance(recipe, Recipe):
        recipe = load(recipe)
    profile = profile or recipe.default_profile
    if profile not in recipe.profiles:
        raise ValueError(f"recipe {recipe.name}: unknown profile {profile!r}; allowed: {sorted(recipe.profiles)}")
    chosen = recipe.profiles[profile] or {}
    fixed = {k: render(v) for k, v in {**recipe.fixed, **(chosen.get("fixed") or {})}.items()}
    axes = {k: render_axis(v) for k, v in {**recipe.sweep, **(chosen.get("sweep") or {})}.items()}
    hydra_args, extra = [], []
    parser = OverridesParser.create()
    for arg in args:
        override = parser.parse_override(arg)
        key = override.key_or_group
        if key == "hydra" or key.startswith(("hydra/", "hydra.")):
            hydra_args.append(arg)
            continue
        extra.append(arg)
        for settings in (fixed, axes):  # the recipe's setting of this key, written with or without +/++/~
            for k in [k for k in settings if bare(k) == key]:
                del settings[k]
        key, _, value = arg.partition("=")
        (axes if override.is_sweep_override() else fixed)[key] = value if "=" in arg else None  # None: `~key`
    sweep_dir = next((Path(h.split("=", 1)[1]) for h in hydra_args if h.startswith("hydra.sweep.dir=")), None)
    if sweep_dir is None:
        leaf = profile
        # how points run (threads=, gpu_points=, ...) is not what they compute: the same sweep with more points at
        # once finds its completed points
        identity = [a for a in extra if bare(a.partition("=")[0]) not in RUN_SETTINGS]
        if identity:
            leaf += "-" + hashlib.sha1(" ".join(sorted(identity)).encode()).hexdigest()[:8]
        sweep_dir = Path(base_dir) / recipe.name / leaf
    if fixed.get("logger") == "wandb":  # W&B: the points grouped under the sweep's name, tagged recipe and profile
        fixed.setdefault("logger.wandb.group", f"{recipe.name}-{sweep_dir.name}")
        fixed.setdefault("logger.wandb.tags", render([f"recipe-{recipe.name}", f"profile-{profile}"]))
    return Plan(recipe=recipe, profile=profile, fixed=fixed, axes=axes, hydra=hydra_args, extra=extra,
                sweep_dir=sweep_dir)


def check(p: Plan) -> None:
    """Compose (and resolve, all but the run dir) every probe of the plan: a bad override is reported now, for
    all of them at once, instead of as a failure in the middle of a launched sweep. Raises ValueError."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException
    errors = []
    with initialize_config_dir(str(CONF), version_base="1.3"):
        for overrides in p.probes():
            try:
                cfg = compose("train", overrides=[*overrides, "run_dir=/nonexistent"])
                OmegaConf.to_container(cfg, resolve=True)
            except (HydraException, OmegaConfBaseException, ValueError, TypeError) as e:  # reported alike
                errors.append(f"  {' '.join(overrides)}\n    {type(e).__name__}: {e}".replace("\n", "\n    "))
    if errors:
        raise ValueError(f"recipe {p.recipe.name} ({p.profile}): {len(errors)} override set(s) do not compose:\n"
                         + "\n".join(errors))


def settings_record(p: Plan) -> dict:
    """What <sweep dir>/sweep.json keeps: enough to tell whether a sweep dir was made by the same settings."""
    return {"recipe": p.recipe.name, "profile": p.profile, "fixed": p.fixed, "axes": p.axes, "extra": p.extra,
            "command": p.command()[1:]}


def claim(p: Plan) -> None:
    """Write <sweep dir>/sweep.json, or check that the one there has the same fixed settings: points are named
    by their axes only, so a sweep dir made with other fixed settings would hand back the wrong runs."""
    p.sweep_dir.mkdir(parents=True, exist_ok=True)
    path = p.sweep_dir / "sweep.json"
    mine = settings_record(p)
    if path.exists():
        theirs = json.loads(path.read_text())
        if theirs.get("fixed") != mine["fixed"]:
            keys = sorted(k for k in {*theirs.get("fixed", {}), *mine["fixed"]}
                          if theirs.get("fixed", {}).get(k) != mine["fixed"].get(k))
            raise ValueError(f"{p.sweep_dir} holds runs made with other fixed settings (differing: {keys}); "
                             f"delete that directory, or pass hydra.sweep.dir=ANOTHER_DIR")
    from hybrid.atomic import write_text  # torch-free callers (figures) never get here
    write_text(path, json.dumps(mine, indent=2) + "\n")
