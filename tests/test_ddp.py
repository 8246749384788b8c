"""Several ranks on the CPU (trainer=ddp, gloo, two processes started by `python -m hybrid.train`): the same
run as one process at twice the batch, exact resume after SIGKILL, evaluation over every rank's examples, the
records; FSDP where Lightning runs it on the CPU; each rank's slice of the data stream.

Tolerance of "the same run": metrics and weights agree to 1e-5 relative (measured: about 1e-7). Two ranks sum
the gradient and the statistics in another order than one process, so they are equal in exact arithmetic, not
bit for bit. A resumed two-rank run equals the uninterrupted two-rank run exactly.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from hybrid.generate import load_run
from hybrid.lit import answer_stats
from hybrid.tasks.datamodule import TaskDataModule
from hybrid.tasks.mqar import MQARConfig
from hybrid.train import train

ROOT = Path(__file__).parents[1]
RUN = ["experiment=smoke", "trainer.max_steps=16", "trainer.val_check_interval=8", "checkpoint_every=4",
       "data.eval_batches=2", "trainer.enable_progress_bar=false"]
PER_RANK = ["data.batch_size=4", "data.eval_batch_size=4"]
TWO_RANKS = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", *PER_RANK]
ONE_AT_TWICE = ["data.batch_size=8", "data.eval_batch_size=8"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def command(run_dir: Path, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "hybrid.train", *RUN, *overrides, f"run_dir={run_dir}"]


def run_cli(run_dir: Path, *overrides: str) -> dict:
    """A whole run through the command line (rank 0 starts rank 1); its result.json."""
    done = subprocess.run(command(run_dir, *overrides), cwd=ROOT, env=ENV, capture_output=True, text=True,
                          timeout=300, check=False, start_new_session=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "result.json").read_text())


def weights(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Two two-rank runs started together (their slow process starts overlap): one runs to the end, the other is
    killed with SIGKILL (both ranks) once it has written a checkpoint, then resumed by the same command."""
    base = tmp_path_factory.mktemp("ddp")
    whole, killed = base / "two_ranks", base / "killed"
    logs = {d: open(base / f"{d.name}.log", "w") for d in (whole, killed)}  # noqa: SIM115 (closed below)
    procs = {d: subprocess.Popen(command(d, *TWO_RANKS), cwd=ROOT, env=ENV, stdout=logs[d], stderr=logs[d],
                                 start_new_session=True) for d in (whole, killed)}
    ckpt, deadline = killed / "checkpoints" / "last.ckpt", time.time() + 240
    while not ckpt.exists() and procs[killed].poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(procs[killed].pid, signal.SIGKILL)  # both ranks, as a lost node or an out-of-memory kill would
    procs[killed].wait()
    killed_midway = ckpt.exists() and not (killed / "result.json").exists()
    code = procs[whole].wait(timeout=300)
    for log in logs.values():
        log.close()
    assert code == 0, (base / "two_ranks.log").read_text()[-3000:]
    resumed = run_cli(killed, *TWO_RANKS) if killed_midway else None
    return {"whole": whole, "killed": killed, "killed_midway": killed_midway, "resumed": resumed}


@pytest.fixture(scope="module")
def two_ranks(runs) -> Path:
    return runs["whole"]


def test_two_ranks_equal_one_process_at_twice_the_batch(two_ranks, tmp_path):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        one = train(compose("train", overrides=[*RUN, *ONE_AT_TWICE, f"run_dir={tmp_path}"]))
    two = json.loads((two_ranks / "result.json").read_text())
    assert two["step"] == one["step"] == 16
    assert set(two["metrics"]) == set(one["metrics"])
    for name, value in one["metrics"].items():
        assert two["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-7), name
    a, b = weights(two_ranks), weights(tmp_path)
    assert a.keys() == b.keys()
    for name in a:  # the same gradients at every step, so the same weights
        torch.testing.assert_close(a[name], b[name], rtol=1e-5, atol=1e-6, msg=name)
    record = json.loads((two_ranks / "record.json").read_text())
    assert record["status"] == "completed"
    assert record["distributed"]["world_size"] == 2 and record["distributed"]["strategy"] == "DDPStrategy"
    assert [r["rank"] for r in record["distributed"]["ranks"]] == [0, 1]
    assert all(r["device"] == "cpu" and r["host"] for r in record["distributed"]["ranks"])


def test_evaluation_is_over_every_ranks_examples(two_ranks):
    # evaluate the final weights in one process on the whole evaluation set (what both ranks saw together) and on
    # rank 0's half alone: the run's accuracy and loss must be the former
    model, cfg = load_run(two_ranks)
    model.eval()
    dm = TaskDataModule(instantiate(cfg.task), batch_size=8, eval_batches=2, eval_batch_size=8, seed=cfg.seed)
    whole, rank0 = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    with torch.no_grad():
        for inputs, targets in dm.val_dataloader()[0]:  # L64, global batches of 8: rank 0 had rows 0..3
            whole += torch.stack([s.double() for s in answer_stats(model(inputs).logits, targets)])
            rank0 += torch.stack([s.double() for s in answer_stats(model(inputs[:4]).logits, targets[:4])])
    metrics = json.loads((two_ranks / "result.json").read_text())["metrics"]
    # the loss tells the two apart even when a barely trained model's accuracy is the same (0) on both
    loss_whole, loss_rank0 = float(whole[0] / whole[2]), float(rank0[0] / rank0[2])
    assert abs(loss_rank0 - loss_whole) > 1e-3 * loss_whole, "choose a seed where rank 0's half scores differently"
    assert metrics["val/acc_L64"] == pytest.approx(float(whole[1] / whole[2]), abs=1e-9)
    assert metrics["val/loss_L64"] == pytest.approx(loss_whole, rel=1e-5)


def test_killed_two_rank_run_resumes_to_identical_metrics(runs):
    assert runs["killed_midway"], "the run was not killed between its first checkpoint and its end"
    result = runs["resumed"]
    assert result["resumed_from"].endswith("last.ckpt") and result["step"] == 16
    assert result["metrics"] == json.loads((runs["whole"] / "result.json").read_text())["metrics"]
    a, b = weights(runs["whole"]), weights(runs["killed"])
    assert all(torch.equal(a[name], b[name]) for name in a)


def fsdp_on_cpu_refusal() -> str | None:
    """Lightning's reason for not running FSDP on the CPU, or None when it does."""
    try:
        L.Trainer(accelerator="cpu", devices=2, strategy="fsdp", logger=False)
    except (ValueError, RuntimeError) as e:
        return f"Lightning {L.__version__} does not run FSDP on the CPU: {e}"
    return None


def test_fsdp_two_ranks_on_the_cpu(two_ranks, tmp_path):
    reason = fsdp_on_cpu_refusal()
    if reason:
        pytest.skip(reason)
    result = run_cli(tmp_path, "trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2",
                     "trainer.strategy.mixed_precision=null", *PER_RANK)
    reference = json.loads((two_ranks / "result.json").read_text())["metrics"]
    assert result["metrics"] == pytest.approx(reference, rel=1e-5)
    model, _ = load_run(tmp_path)  # the full-state-dict checkpoint loads into one process
    assert sum(p.numel() for p in model.parameters()) == sum(v.numel() for v in weights(two_ranks).values())


def test_fsdp_config_wraps_and_checkpoints_each_residual_block():
    from torch.distributed.fsdp import MixedPrecision
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from hybrid.blocks.residual import ResidualBlock
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=fsdp", "run_dir=unused",
                                          "trainer.strategy.activation_checkpointing_policy.enabled=true"])
    strategy = instantiate(OmegaConf.to_container(cfg.trainer.strategy, resolve=True))
    model = instantiate(cfg.model)
    policies = strategy.kwargs["auto_wrap_policy"], strategy._activation_checkpointing_kwargs["auto_wrap_policy"]
    for policy in policies:
        assert isinstance(policy, ModuleWrapPolicy)
        chosen = [m for m in model.modules() if type(m) in policy._module_classes]
        assert chosen and all(isinstance(m, ResidualBlock) for m in chosen) and len(chosen) == len(model.pattern)
    assert strategy.mixed_precision == MixedPrecision(param_dtype=torch.bfloat16, reduce_dtype=torch.float32,
                                                      buffer_dtype=torch.float32)
    assert strategy._state_dict_type == "full" and cfg.trainer.use_distributed_sampler is False


def test_multinode_slurm_preset_follows_the_trainer():
    # nodes x GPUs per node with one task (rank) per GPU, from trainer.num_nodes and trainer.devices
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm_multinode", "trainer=ddp", "trainer.num_nodes=3",
                                          "trainer.devices=4", "run_dir=unused"], return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.nodes, launcher.gpus_per_node, launcher.tasks_per_node) == (3, 4, 4)


def test_weight_decay_groups_survive_wrapping():
    # FSDP and activation checkpointing rename every block's parameters (and FSDP shows 1-D shards): the decayed
    # weights are still exactly the matrices of the unwrapped model
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import apply_activation_checkpointing

    from hybrid.fsdp import block_policy
    from hybrid.lit import HybridLitModule
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=smoke", "run_dir=unused"])
    model = instantiate(cfg.model)
    module = HybridLitModule(model, optimizer=torch.optim.AdamW)
    plain = {id(p) for p in module.configure_optimizers().param_groups[0]["params"]}
    keys = list(model.state_dict())
    apply_activation_checkpointing(model, auto_wrap_policy=block_policy())
    assert list(model.state_dict()) == keys  # checkpoints keep the plain names: they load without the wrappers
    assert any("_checkpoint_wrapped_module" in n for n, _ in model.named_parameters())
    wrapped = module.configure_optimizers().param_groups
    assert {id(p) for p in wrapped[0]["params"]} == plain
    assert plain == {id(p) for n, p in model.named_parameters() if p.dim() >= 2 and "A_log" not in n}
    assert len(wrapped[0]["params"]) + len(wrapped[1]["params"]) == len(list(model.parameters()))


class FakeTrainer:
    def __init__(self, rank: int, world: int):
        self.global_rank, self.world_size = rank, world


def test_ranks_read_their_slice_of_the_stream():
    # N ranks at batch b see exactly the sequences one rank sees at batch N * b, training and evaluation
    task = MQARConfig(vocab_size=32, num_kv_pairs=4, train_length=32, eval_lengths=[32, 64])
    one = TaskDataModule(task, batch_size=6, eval_batches=2, seed=3)
    ranks = [TaskDataModule(task, batch_size=2, eval_batches=2, seed=3) for _ in range(3)]
    for r, dm in enumerate(ranks):
        dm.trainer = FakeTrainer(r, 3)
    for step in (0, 5):
        whole = one._rank_slice(6, split="train", step=step, length=32)
        parts = [dm._rank_slice(2, split="train", step=step, length=32) for dm in ranks]
        assert all(p[0].shape == (2, 32) for p in parts)
        for i in range(2):
            assert torch.equal(torch.cat([p[i] for p in parts]), whole[i])
    for spec in range(2):  # every evaluation set: the same batches, split by rows, none twice
        whole = list(one.val_dataloader()[spec])
        parts = [list(dm.val_dataloader()[spec]) for dm in ranks]
        assert all(len(p) == len(whole) == 2 for p in parts)  # every rank has every batch (FSDP needs that)
        for b in range(2):
            assert torch.equal(torch.cat([p[b][0] for p in parts]), whole[b][0])
