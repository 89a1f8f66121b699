"""The real-size profile (params/real): the full profile's models with caps, and its torchrun path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from sasrec.cli import build_parser
from sasrec.cli import train as train_cli
from sasrec.config import load_yaml_mapping
from sasrec.errors import ConfigError
from sasrec.study.profiles import profile_train_config
from sasrec.study.steps import model_configs

PARAMS = Path(__file__).resolve().parents[1] / "params"


def _params(profile: str, notebook: str) -> dict:
    return load_yaml_mapping(PARAMS / profile / f"{notebook}.yaml")


def test_the_real_profile_runs_the_full_profiles_notebooks_models_and_baselines_with_caps() -> None:
    assert sorted(p.name for p in (PARAMS / "real").glob("*.yaml")) == sorted(
        p.name for p in (PARAMS / "full").glob("*.yaml")
    )
    for notebook, dataset in (("03_train", "dataset"), ("05_cross_dataset", "train_dataset")):
        real, full = _params("real", notebook), _params("full", notebook)
        assert real["simulator"]["scale"] == 1.0 and real[dataset] == full[dataset]
        assert list(real["models"]) == list(full["models"])
        assert real.get("baselines") == full.get("baselines")
        real_configs = model_configs(real[dataset], real["training"], real["models"])
        full_configs = model_configs(full[dataset], full["training"], full["models"])
        for name, config in real_configs.items():
            full_config = full_configs[name]
            assert config.num_epochs <= full_config.num_epochs and config.maxlen <= full_config.maxlen
            same = (
                "model",
                "loss",
                "hidden_units",
                "num_blocks",
                "num_heads",
                "dropout_rate",
                "batch_size",
                "lr",
            )
            assert all(getattr(config, key) == getattr(full_config, key) for key in same), name


def test_train_config_file_trains_the_profiles_model_with_its_settings(tmp_path: Path) -> None:
    params = _params("real", "05_cross_dataset")
    for model in params["models"]:
        config = profile_train_config("real", "05_cross_dataset", model, with_data_dir=False)
        path = tmp_path / f"{model}.yaml"
        path.write_text(yaml.safe_dump(config))
        args = build_parser().parse_args(["train", f"--config={path}", "--train_dir=ddp"])
        settings = train_cli._settings(args)
        from_file = train_cli._config(settings)
        from_notebook = model_configs(params["train_dataset"], params["training"], params["models"])[model]
        assert settings["dataset"] == "big_matrix"
        differ = {k for k, v in from_notebook.to_dict().items() if from_file.to_dict().get(k) != v}
        assert differ <= {"train_dir"}, (model, differ)


def test_train_config_names_the_known_models_and_notebooks() -> None:
    with pytest.raises(ConfigError, match=r"--model nope: .* expected one of sasrec_bce, "):
        profile_train_config("real", "05_cross_dataset", "nope", with_data_dir=False)
    with pytest.raises(ConfigError, match="expected one of 03_train, 05_cross_dataset"):
        profile_train_config("real", "04_evaluate", "sasrec_bce", with_data_dir=False)
    with pytest.raises(ConfigError, match="--profile nowhere"):
        profile_train_config("nowhere", "05_cross_dataset", "sasrec_bce", with_data_dir=False)
