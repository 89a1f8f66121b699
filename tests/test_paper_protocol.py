"""The SASRec paper's protocol (Kang & McAuley, ICDM 2018) on a SASRec-format text file.

Leave-one-out (last item to test, the one before to validation) and the held-out item ranked against 100
sampled negatives, through the same commands a user runs on ``ml-1m.txt`` (``make paper``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from sasrec.cli import main

NUM_ITEMS, NUM_USERS, LENGTH = 150, 40, 25


@pytest.fixture
def successor_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Users walk the cycle 1 -> 2 -> ... -> 150 -> 1 from random starts: the next item is always known."""
    monkeypatch.setenv("SASREC_ROOT", str(tmp_path))
    rng = np.random.default_rng(0)
    starts = rng.integers(0, NUM_ITEMS, NUM_USERS)
    lines = [f"{u + 1} {(s + t) % NUM_ITEMS + 1}" for u, s in enumerate(starts) for t in range(LENGTH)]
    path = tmp_path / "cycle.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


PROTOCOL = ["--split=leave_one_out", "--eval_protocol=sampled", "--num_eval_negatives=100"]


def test_transition_model_is_perfect_under_the_paper_protocol(successor_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "markov.json"
    assert (
        main(
            [
                "baseline",
                f"--dataset={successor_file}",
                "--model",
                "markov",
                *PROTOCOL,
                f"--metrics_json={out}",
            ]
        )
        == 0
    )
    payload = json.loads(out.read_text(encoding="utf-8"))
    assert payload["protocol"] == "sampled" and payload["split"] == "leave_one_out" and payload["k"] == 10
    # every user has exactly one held-out item, its successor is deterministic: rank 1 of 101 candidates
    assert payload["test"]["users"] == NUM_USERS
    assert payload["test"]["hr@10"] == pytest.approx(1.0)
    assert payload["test"]["ndcg@10"] == pytest.approx(1.0)


def test_sasrec_runs_the_paper_protocol_and_beats_chance(successor_file: Path, tmp_path: Path) -> None:
    torch.set_num_threads(1)
    out = tmp_path / "sasrec.json"
    args = ["train", f"--dataset={successor_file}", "--train_dir=paper", "--device=cpu", "--maxlen=20",
            "--hidden_units=32", "--num_blocks=1", "--dropout_rate=0.0", "--lr=0.01", "--num_epochs=25",
            "--batch_size=64", "--progress=false", *PROTOCOL, f"--metrics_json={out}"]  # fmt: skip
    assert main(args) == 0
    payload = json.loads(out.read_text(encoding="utf-8"))
    assert payload["protocol"] == "sampled" and payload["split"] == "leave_one_out"
    assert payload["test"]["users"] == NUM_USERS
    # chance HR@10 with 1 positive among 101 candidates is 10/101 ~ 0.099
    assert payload["test"]["hr@10"] > 0.5
