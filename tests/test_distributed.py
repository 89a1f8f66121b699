"""Multi-process training with torch.distributed (gloo on CPU, as CI has no GPU).

* One DDP epoch of 2 processes whose shards together form one global batch gives the same parameters as one
  single-process step on that batch (dropout 0, full cross-entropy: no randomness; SGD), to 1e-5.
* A real ``torchrun --nproc_per_node=2 -m sasrec train`` run completes, writes one checkpoint that loads in
  one process, resumes a single-process checkpoint, and its metrics are within noise of a 1-process run.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from sasrec.training.config import TrainConfig
from sasrec.training.distributed import SINGLE, DistContext, init_process_group, shutdown
from sasrec.training.loop import build_run, fit_mask, run_epoch
from tests.conftest import make_prepared

N_USERS, N_ITEMS = 8, 12


def _data():
    """8 users with 6 training events each (distinct walks over 12 items), 1 validation and 1 test event."""
    rows = []
    for user in range(1, N_USERS + 1):
        items = [(user + 2 * step) % N_ITEMS + 1 for step in range(8)]
        for position, item in enumerate(items):
            split = 0 if position < 6 else (1 if position == 6 else 2)
            rows.append((user, item, float(position), 3.0, split))
    return make_prepared(rows, num_users=N_USERS, num_items=N_ITEMS, name="ddp")


def _config(batch_size: int) -> TrainConfig:
    return TrainConfig(dataset="ddp", loss="ce", dropout_rate=0.0, hidden_units=8, num_blocks=1, maxlen=5,
                       batch_size=batch_size, lr=0.01, device="cpu", progress=False, num_epochs=1)  # fmt: skip


def _parameters_after_one_epoch(
    context: DistContext, batch_size: int, folder: Path
) -> dict[str, torch.Tensor]:
    data = _data()
    config = _config(batch_size)
    run = build_run(data, config, mask=fit_mask(data, config), validate=False, folder=folder, context=context)
    # SGD, not the loop's Adam: Adam divides by the gradient's magnitude, so the float noise of a gradient that
    # is mathematically zero (the key-projection bias: softmax ignores a per-row constant) becomes a full-size
    # step of random sign; the equivalence at stake is the distributed gradient.
    run.optimizer = torch.optim.SGD(run.model.parameters(), lr=0.5)
    run_epoch(run, 1)
    return {k: v.detach().clone() for k, v in run.model.state_dict().items()}


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank)})  # fmt: skip
    torch.set_num_threads(1)
    context = init_process_group(
        torch.device("cpu"), DistContext(rank=rank, world_size=world_size, local_rank=rank)
    )
    try:
        state = _parameters_after_one_epoch(context, N_USERS // world_size, Path(out).parent)
        if rank == 0:
            torch.save(state, out)
    finally:
        shutdown(context)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_one_ddp_step_equals_one_single_process_step_on_the_global_batch(tmp_path: Path) -> None:
    out = tmp_path / "ddp_state.pt"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    distributed = torch.load(out, weights_only=True)
    single = _parameters_after_one_epoch(SINGLE, N_USERS, tmp_path)  # one batch of all 8 users
    untouched = _parameters_after_one_epoch(SINGLE, N_USERS, tmp_path)
    assert distributed.keys() == single.keys()
    for key in single:
        assert torch.equal(single[key], untouched[key])  # the single-process reference is deterministic
        torch.testing.assert_close(distributed[key], single[key], rtol=1e-5, atol=1e-5, msg=key)
    initial = build_run(
        _data(), _config(8), mask=fit_mask(_data(), _config(8)), validate=False, folder=tmp_path
    )
    moved = [k for k, v in initial.model.state_dict().items() if not torch.allclose(v, single[k])]
    assert moved, "the step changed no parameter: the comparison would be vacuous"


TINY = [
    "--maxlen=20",
    "--hidden_units=16",
    "--device=cpu",
    "--progress=false",
    "--eval_every=1",
    "--patience=0",
]


@pytest.fixture(scope="module")
def kuairec_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from sasrec.data.simulator import simulate

    root = tmp_path_factory.mktemp("ddp_root")
    raw = tmp_path_factory.mktemp("ddp_kuairec")
    simulate(scale=0.02, seed=0, out_dir=raw, progress=False)
    return {"root": root, "raw": raw}


def _train(world: dict[str, Path], nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SASREC_ROOT": str(world["root"]), "SASREC_PROGRESS": "0", "OMP_NUM_THREADS": "1"}
    if nproc == 1:
        command = [sys.executable, "-m", "sasrec", "train"]
    else:
        torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
        command = [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "sasrec", "train"]
    return subprocess.run([*command, f"--data-dir={world['raw']}", *args], env=env, capture_output=True, text=True,
                          check=False, timeout=600)  # fmt: skip


@pytest.mark.slow
def test_torchrun_two_processes_match_one_process_and_share_checkpoints(
    kuairec_world: dict[str, Path],
) -> None:
    from sasrec.training.checkpoints import load_checkpoint

    world = kuairec_world
    one = world["root"] / "one.json"
    done = _train(
        world,
        1,
        "--dataset=small_matrix",
        "--train_dir=one",
        "--num_epochs=3",
        *TINY,
        f"--metrics_json={one}",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    two = world["root"] / "two.json"
    done = _train(
        world,
        2,
        "--dataset=small_matrix",
        "--train_dir=two",
        "--num_epochs=3",
        *TINY,
        f"--metrics_json={two}",
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "x 2 processes (gloo)" in done.stdout
    assert (
        done.stdout.count("training sasrec on") == 1 and done.stdout.count("metrics written") == 1
    )  # rank 0 only
    single, multi = json.loads(one.read_text()), json.loads(two.read_text())
    assert single["test"]["users"] == multi["test"]["users"] > 0  # the same test users
    for metric in ("ndcg@10", "recall@10"):
        assert abs(single["test"][metric] - multi["test"][metric]) < 0.1, (
            metric,
            single["test"],
            multi["test"],
        )
    # the checkpoint written by 2 processes loads in one (no DistributedDataParallel "module." prefix)
    model, config, payload = load_checkpoint(multi["checkpoint"])
    assert not any(key.startswith("module.") for key in payload["model_state"])
    assert config.train_dir == "two" and model.num_items > 0
    # and a single-process checkpoint resumes under 2 processes
    done = _train(
        world, 2, "--dataset=small_matrix", "--train_dir=one", "--num_epochs=4", *TINY, "--resume=true"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "epoch   4  loss" in done.stdout and "epoch   1  loss" not in done.stdout
    last = sorted((world["root"] / "models" / "small_matrix_one").glob("*.last.pth"))
    assert [p.name.split(".")[1] for p in last] == ["epoch=4"]


@pytest.mark.slow
def test_torchrun_trains_the_real_size_profiles_model_from_its_config_file(
    kuairec_world: dict[str, Path],
) -> None:
    """``make train-ddp DDP_PROFILE=real``'s path: the profile's big-matrix model as a --config file, 2 processes."""
    import yaml

    from sasrec.study.profiles import profile_train_config

    world = kuairec_world
    config = profile_train_config("real", "05_cross_dataset", "sasrec_bce", with_data_dir=False)
    config_file = world["root"] / "real.yaml"
    config_file.write_text(yaml.safe_dump(config))
    metrics = world["root"] / "real.json"
    done = _train(world, 2, f"--config={config_file}", "--train_dir=real", "--num_epochs=1", "--device=cpu",
                  "--progress=false", f"--metrics_json={metrics}")  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "x 2 processes (gloo)" in done.stdout and "training sasrec on big_matrix" in done.stdout
    trained = json.loads(metrics.read_text())["config"]
    profile = {**config, "num_epochs": 1}
    for key in ("maxlen", "batch_size", "hidden_units", "num_blocks", "num_heads", "dropout_rate", "lr", "loss",
                "split", "fit_on", "num_epochs"):  # fmt: skip
        assert trained[key] == profile[key], key
