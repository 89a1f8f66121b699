"""Preferences and content in the study: withheld videos are absent while models train, their behaviour is
blank, id dropout, the content baselines on the command line, and the experiment tables of notebook 07."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from sasrec.data.cold_start import ColdStart, withheld_videos
from sasrec.errors import ConfigError
from sasrec.study import preferences
from sasrec.training.config import TrainConfig
from sasrec.training.negatives import NegativeSampler
from tests.test_cold_start import _data


# ------------------------------------------------------------------------- item cold-start, training
def test_withheld_videos_are_never_drawn_as_negatives() -> None:
    data = _data()
    withheld = withheld_videos(data, 0.1, seed=0)
    mask = np.ones(len(data.events), dtype=bool)
    generator = torch.Generator().manual_seed(0)
    sampler = NegativeSampler(
        data, mask, device=torch.device("cpu"), generator=generator, unavailable=withheld
    )
    users = torch.arange(1, data.num_users + 1)
    drawn = sampler.uniform(users, (400,)).numpy()  # (U, 400)
    assert not withheld[drawn].any()
    assert set(np.unique(drawn)) <= set(np.flatnonzero(~withheld)) - {0}
    trained = set(zip(data.events["user"], data.events["item"], strict=True))
    assert not any((int(u), int(i)) in trained for u, row in zip(users, drawn, strict=True) for i in row[:20])
    # the full softmax's catalogue: every kept item, each mapped to its own row
    kept = sampler.catalogue.numpy()
    assert np.array_equal(kept, np.flatnonzero(~withheld))
    assert np.array_equal(sampler.catalogue_rows.numpy()[kept], np.arange(len(kept)))
    plain = NegativeSampler(
        data, mask, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0)
    )
    assert plain.catalogue is None  # the standard protocol draws as before
    assert withheld[plain.uniform(users, (400,)).numpy()].any()


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_item_cold_start_losses_do_not_touch_withheld_videos(
    loss: str, tmp_path: Path, one_thread: None
) -> None:
    """A withheld video's id embedding gets no gradient from any loss: it is no positive (not in the
    sequences), no negative (never drawn) and, under the full softmax, not in the denominator."""
    from sasrec.training.loop import _batch_loss, build_run, fit_mask

    data = _data()
    withheld = torch.from_numpy(withheld_videos(data, 0.1, seed=0))
    config = TrainConfig(cold_start="items", loss=loss, hidden_units=8, num_blocks=1, maxlen=10, device="cpu",
                         progress=False)  # fmt: skip
    run = build_run(data, config, mask=fit_mask(data, config), validate=False, folder=tmp_path)
    t = run.tensors
    run.model.train()
    loss_value = _batch_loss(run.model, run.sampler, t["users"], t["inputs"], t["targets"], t["window"],
                             config, run.beta)  # fmt: skip
    loss_value.backward()
    grad = run.model.item_emb.weight.grad  # (I+1, d)
    assert grad[withheld].abs().sum() == 0
    assert grad[~withheld][1:].abs().sum() > 0


def test_withheld_videos_have_blank_behaviour_features_and_others_keep_theirs() -> None:
    from sasrec.data.features import FeatureTable
    from sasrec.data.features.table import FeatureGroup
    from sasrec.training.features import feature_bundle

    values = np.arange(1, 13, dtype=np.float32).reshape(6, 2)  # (I+1, 2) with I = 5
    stats = FeatureGroup(name="item_stats", entity="item", kind="dense", source="item_daily_features.csv",
                         columns=("a", "b"), values=values)  # fmt: skip
    table = FeatureTable(dataset="t", data_fingerprint="f", num_items=5, num_users=1, groups={"item_stats": stats},
                         unavailable={}, params={})  # fmt: skip
    blank = np.array([False, False, True, False, True, False])
    plain = feature_bundle(table, ["item_stats"]).groups[0].values.numpy()
    cold = feature_bundle(table, ["item_stats"], blank_items=blank).groups[0].values.numpy()
    assert (cold[blank] == 0).all() and (plain[blank] != 0).all()
    assert np.array_equal(cold[~blank], plain[~blank])  # every other video keeps its scaled values
    assert np.array_equal(table.groups["item_stats"].values, values)  # the table itself is not changed


# ------------------------------------------------------------------------------------------ id dropout
def test_id_dropout_needs_features_and_a_probability_below_one() -> None:
    with pytest.raises(ConfigError, match="id_dropout=0.5 needs side features"):
        TrainConfig(id_dropout=0.5).validate()
    with pytest.raises(ConfigError, match=r"id_dropout must be in \[0.0, 1.0\)"):
        TrainConfig(id_dropout=1.0, features="tags").validate()


def test_id_dropout_drops_ids_only_while_training() -> None:
    from sasrec.models.base import build_model
    from sasrec.models.features import FeatureBundle, GroupTensors

    torch.manual_seed(0)
    n = 6
    tags = GroupTensors(name="tags", entity="item", kind="categorical", rows=n + 1, sizes=(4,),
                        values=torch.tensor([[0], [1], [2], [3], [1], [2], [3]]))  # fmt: skip
    bundle = FeatureBundle(groups=(tags,), digest="d")
    model = build_model("sasrec", n, hidden_units=8, num_blocks=1, num_heads=1, maxlen=5,
                        feature_spec=bundle.spec())  # fmt: skip
    model.load_features(bundle)
    model.eval()
    with torch.no_grad():
        reference = model.item_table().clone()
    model.id_dropout = 0.5
    with torch.no_grad():
        assert torch.equal(model.item_table(), reference)  # evaluation: every id used
        model.train()
        dropped = model.item_table().clone()
    changed = ~torch.isclose(dropped, reference).all(dim=1)
    content = model.feature_fusion.item_vectors()
    assert changed[1:].any() and torch.allclose(dropped[changed], content[changed])  # features alone there


# ------------------------------------------------------------------------------------ the command line
def test_baseline_command_fits_content_on_the_side_features(world: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "content.json"
    env = {"SASREC_ROOT": str(world["root"]), "SASREC_PROGRESS": "0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "sasrec", "baseline", "--dataset", "small_matrix", "--model", "content",
         "--data-dir", str(world["raw"]), "--features", "tags,categories", "--cold_start", "items",
         "--metrics_json", str(out)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    payload = json.loads(out.read_text())
    assert payload["target"] == "liked"  # content's own default, not the other baselines' views
    assert "cold start items" in done.stdout and "target liked" in done.stdout
    refused = subprocess.run(
        [sys.executable, "-m", "sasrec", "baseline", "--dataset", "small_matrix", "--model", "pop",
         "--data-dir", str(world["raw"]), "--features", "all"],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert refused.returncode != 0
    assert refused.stderr.strip().splitlines()[-1].startswith("error: --features applies to the side-feature")


# ----------------------------------------------------------------------------------- experiment tables
def _target_payload() -> dict:
    rows = []
    for arm, valid, test in (("m|views", 0.30, 0.20), ("m|liked", 0.35, 0.25), ("m|graded", 0.35, 0.10),
                             ("pop|views", 0.10, 0.10), ("pop|liked", 0.05, 0.15)):  # fmt: skip
        for task, value in (("valid:none", valid), ("test:none", test)):
            rows.append({"model": arm, "task": task, "protocol": "full", "metric": "ndcg@10", "mean": value,
                         "low": value - 0.01, "high": value + 0.01})  # fmt: skip
    arms = [{"arm": a, "model": a.split("|")[0], "kind": "trained", "target": a.split("|")[1]}
            for a in ("m|views", "m|liked", "m|graded", "pop|views", "pop|liked")]  # fmt: skip
    paired = [{"model": "m|liked", "reference": "m|views", "metric": "ndcg@10", "difference": 0.05, "low": 0.01,
               "high": 0.09, "p_value": 0.01, "task": "test:none"}]  # fmt: skip
    return {"table": rows, "arms": arms, "paired": paired}


def test_validation_selects_the_target_and_ties_go_to_the_first_listed() -> None:
    payload = _target_payload()
    assert preferences.selected_targets(payload) == {"m": "liked", "pop": "views"}  # never the test's best
    table = preferences.target_table(payload).set_index(["model", "target"])
    assert table.loc[("m", "liked"), "vs views (test)"] == "+0.0500 [+0.0100, +0.0900] (p=0.01)"
    assert table.loc[("m", "liked"), "test ndcg@10"] == "0.2500 [0.2400, 0.2600]"
    check = preferences.target_check(payload, {"m": {"target": "liked"}}, {"pop": {"target": "liked"}})
    assert check.set_index("model")["agrees"].to_dict() == {"m": True, "pop": False}


def test_pick_keeps_the_order_and_names_unknown_models() -> None:
    assert list(preferences.pick({"a": {}, "b": {"x": 1}}, ["b", "c"], fill={"c": {}})) == ["b", "c"]
    with pytest.raises(ConfigError, match="unknown model.s. zz"):
        preferences.pick({"a": {}}, ["zz"])


def test_cold_start_mapping_is_checked_naming_the_key() -> None:
    assert preferences.cold_start_spec("none", {"frac": 0.5}) is None
    assert preferences.cold_start_spec("items", {"frac": 0.2}) == ColdStart("items", frac=0.2)
    with pytest.raises(ConfigError, match="cold_start: unknown key.s. fraction"):
        preferences.cold_start_spec("items", {"fraction": 0.2})


def test_twin_table_pairs_each_model_with_its_own_twin() -> None:
    rows, arms, paired = [], [], []
    for protocol in ("none", "items"):
        for variant, value in (("ids", 0.1), ("features", 0.3)):
            arm = f"m|{protocol}|{variant}"
            arms.append({"arm": arm, "model": "m", "kind": "trained", "protocol": protocol})
            for metric, v in (("ndcg@10", value), ("hr@10", 2 * value), ("users", 7.0)):
                rows.append({"model": arm, "task": f"test:{protocol}", "protocol": "full", "metric": metric,
                             "mean": v, "low": v - 0.01, "high": v + 0.01})  # fmt: skip
        paired.append({"model": f"m|{protocol}|features", "reference": f"m|{protocol}|ids", "metric": "ndcg@10",
                       "difference": 0.2, "low": 0.1, "high": 0.3, "p_value": 0.001, "task": f"test:{protocol}"})  # fmt: skip
    payload = {"table": rows, "arms": arms, "paired": paired}
    table = preferences.twin_table(payload)
    assert list(table["protocol"]) == ["standard", "item cold-start"]
    assert table["features - ids ndcg@10"].iloc[1] == "+0.2000 [+0.1000, +0.3000] (p=0.001)"
    assert table["users"].tolist() == [7, 7]
    plotted = preferences.twin_paired(payload)
    assert set(plotted["task"]) == {"standard", "item cold-start"} and set(plotted["model"]) == {"m"}
    sentences = preferences.findings({"twins": payload, "selected_targets": {"m": "liked"},
                                      "params_targets": {"m": "views"}})  # fmt: skip
    assert "better with features: m +0.2000" in sentences[0] and "item cold-start" in sentences[0]
    assert "configure another target for m" in sentences[-1]
    assert isinstance(pd.DataFrame(payload["table"]), pd.DataFrame)


def test_the_full_run_uses_the_targets_its_committed_report_selected_on_validation() -> None:
    """params/full's default target of every model is the one notebook 07's validation selected, as recorded
    in the committed metrics (a changed parameter file or a report selecting otherwise fails here)."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    payload = json.loads((root / "reports" / "metrics" / "features.json").read_text(encoding="utf-8"))
    full = {name: yaml.safe_load((root / "params" / "full" / f"{name}.yaml").read_text(encoding="utf-8"))
            for name in ("03_train", "04_evaluate", "07_features")}  # fmt: skip
    configured = preferences.configured_targets(full["03_train"]["models"], full["04_evaluate"]["baselines"])
    selected = preferences.selected_targets(payload["targets"], payload["k"])
    assert selected and {m: configured[m] for m in selected} == selected
    ran = payload["params_targets"]  # what notebook 07 ran with
    assert ran == {m: configured[m] for m in ran}
    # notebook 07 compares the very models and baselines of notebooks 03 and 04 (random has no target)
    assert full["07_features"]["models"] == full["03_train"]["models"]
    assert full["07_features"]["baselines"] == {
        k: v for k, v in full["04_evaluate"]["baselines"].items() if k != "random"
    }


def test_validation_chooses_the_feature_candidate_on_the_protocols_own_validation_task() -> None:
    """Under item cold-start the choice reads the cold validation task (not the standard one, not test);
    on the standard protocol the standard validation task; ties go to the first listed candidate."""
    scores = {  # arm -> {task: ndcg@10}
        "m|items|features:all": {"valid:items": 0.9, "valid_cold:items": 0.1, "test:items": 0.0},
        "m|items|features:tags": {"valid:items": 0.2, "valid_cold:items": 0.3, "test:items": 0.5},
        "m|none|features:all": {"valid:none": 0.4, "test:none": 0.1},
        "m|none|features:tags": {"valid:none": 0.4, "test:none": 0.9},
    }
    table = pd.DataFrame([{"model": arm, "task": task, "protocol": "full", "metric": "ndcg@10", "mean": v,
                           "low": v, "high": v} for arm, by_task in scores.items() for task, v in by_task.items()])  # fmt: skip
    per_user = pd.DataFrame([{"model": arm, "task": "test:items", "protocol": "full", "user": 1}
                             for arm in scores])  # fmt: skip
    arms = pd.DataFrame([{"arm": arm, "model": "m", "kind": "trained", "protocol": arm.split("|")[1],
                          "features": arm.split(":")[1]} for arm in scores]
                        + [{"arm": "m|items|ids", "model": "m", "kind": "trained", "protocol": "items",
                            "features": "none"}])  # fmt: skip
    table, per_user, arms = preferences._choose_candidates(table, per_user, arms, 10)
    chosen = arms[arms["chosen"]].set_index("protocol")
    assert chosen.loc["items", "features"] == "tags" and chosen.loc["items", "arm"] == "m|items|features"
    assert chosen.loc["none", "features"] == "all" and chosen.loc["none", "arm"] == "m|none|features"
    assert set(arms["arm"]) == {"m|items|features", "m|items|features:all", "m|none|features",
                                "m|none|features:tags", "m|items|ids"}  # fmt: skip
    assert arms.set_index("arm").loc["m|items|features:all", "selection_ndcg"] == 0.1
    renamed = table[(table["model"] == "m|items|features") & (table["task"] == "test:items")]
    assert renamed["mean"].tolist() == [0.5] and "m|items|features" in set(per_user["model"])
    assert preferences.selection_task("items") == "valid_cold:items"
    assert preferences.selection_task("none") == "valid:none"
