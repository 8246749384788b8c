"""logger=wandb, offline (WANDB_MODE=offline, no network): a run logs its metrics, config and layout pattern; a
resumed run continues the same W&B run; a recipe's sweep groups its points and tags them with recipe and profile."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

pytest.importorskip("wandb")

from hybrid import sweep  # noqa: E402
from hybrid.train import train  # noqa: E402

CONF = str(Path(__file__).parents[1] / "conf")


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def config(run_dir, *overrides):
    with initialize_config_dir(CONF, version_base="1.3"):
        return compose("train", overrides=["experiment=smoke", "logger=wandb", *overrides, f"run_dir={run_dir}"])


def offline_runs(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "wandb").glob("offline-run-*"))


def test_a_run_logs_metrics_config_and_pattern_and_a_resumed_run_continues_it(tmp_path):
    import wandb
    run_dir = tmp_path / "run"
    steps = ["checkpoint_every=2", "trainer.log_every_n_steps=1", "logger.wandb.group=g", "logger.wandb.tags=[t]"]
    try:
        first = train(config(run_dir, "trainer.max_steps=2", *steps))
        run = wandb.run
        run_id = (run_dir / "wandb_run_id").read_text().strip()
        assert run.id == run_id and run.group == "g" and tuple(run.tags) == ("t",)
        assert run.config["model"]["d_model"] == 16 and run.config["seed"] == 0
        assert run.config["pattern"] == first["pattern"] == "MAF"
        assert {"train/loss", "train/acc", "val/acc_L64", "val/loss_L64"} <= set(dict(run.summary))
        wandb.finish()  # the process of the first attempt ends
        # the same run dir with more steps resumes from the checkpoint: the same W&B run, not a new one
        train(config(run_dir, "trainer.max_steps=4", *steps, "resume=force"))
        assert wandb.run.id == run_id and wandb.run.summary["trainer/global_step"] == 4
    finally:
        wandb.finish()
    runs = offline_runs(run_dir)
    assert len(runs) == 2 and all(r.name.endswith(f"-{run_id}") for r in runs)


def test_a_recipe_sweep_groups_and_tags_its_points():
    p = sweep.plan("selective_copying", ["logger=wandb"], profile="quick")
    assert p.fixed["logger.wandb.group"] == f"selective_copying-{p.sweep_dir.name}"
    assert p.fixed["logger.wandb.tags"] == "[recipe-selective_copying,profile-quick]"
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("train", overrides=[*p.probes()[0], "run_dir=/nonexistent"])
    assert list(cfg.logger.wandb.tags) == ["recipe-selective_copying", "profile-quick"]
    assert "logger.wandb.group" not in p.point_names()[0]  # fixed settings never name a point
    assert "logger.wandb.group" not in sweep.plan("selective_copying").fixed
