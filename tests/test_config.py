"""Config merging and validation: unknown keys, wrong types, overrides, and recipe exit codes."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from mmssl.config import ConfigError, from_cli, merge

DEFAULTS = {"lr": 0.1, "max_steps": 10, "resume": False, "data": {"train": "a", "val": ""}, "tasks": ["knn"],
            "model": {"name": "r18", "config": {}}}


def test_overrides_are_parsed_as_yaml_and_checked():
    cfg = merge(DEFAULTS, {"data": {"train": "b"}}, ["lr=3e-4", "resume=true", "tasks=[knn, linear]", "max_steps=5",
                                                     "model.config.hidden_size=64"])
    assert cfg["lr"] == 3e-4 and cfg["resume"] is True and cfg["tasks"] == ["knn", "linear"]
    assert cfg["data"] == {"train": "b", "val": ""} and cfg["max_steps"] == 5
    assert cfg["model"]["config"] == {"hidden_size": 64}  # free-form dicts take new keys
    assert DEFAULTS["data"]["train"] == "a"  # defaults are not mutated


def test_a_model_config_takes_keys_its_default_does_not_list():
    """`backbone.config` holds a transformers config: any key of the model's config class may be
    set (the encoder builder checks it); keys elsewhere stay strict."""
    defaults = {"backbone": {"name": "resnet", "config": {"model_type": "resnet", "depths": [1, 1]}}}
    cfg = merge(defaults, {"backbone": {"config": {"model_type": "regnet", "groups_width": 32}}})
    assert cfg["backbone"]["config"] == {"model_type": "regnet", "depths": [1, 1], "groups_width": 32}
    with pytest.raises(ConfigError, match="unknown config key 'backbone.nmae'"):
        merge(defaults, None, ["backbone.nmae=x"])


@pytest.mark.parametrize("override, message", [
    ("data.trian=x", "unknown config key 'data.trian' (did you mean 'data.train'?)"),
    ("lr=fast", "config field 'lr' must be float, got 'fast'"),
    ("max_steps=1.5", "config field 'max_steps' must be int, got 1.5"),
    ("resume=1", "config field 'resume' must be true or false, got 1"),
    ("lr", "override 'lr' is not of the form key=value"),
])
def test_bad_overrides_name_the_field(override, message):
    with pytest.raises(ConfigError) as info:
        merge(DEFAULTS, None, [override])
    assert str(info.value) == message


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        from_cli(DEFAULTS, ["--config", str(tmp_path / "nope.yaml")])
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        from_cli(DEFAULTS, ["--config", str(bad)])


@pytest.mark.parametrize("args, message", [
    (["data.trian=x"], "unknown config key 'data.trian'"),
    (["lr=fast"], "config field 'lr' must be float"),
    (["data.train=/no/such/shards"], "data path not found: /no/such/shards"),
    (["image_encoder.name=not-a-model-anywhere"], "cannot load encoder 'not-a-model-anywhere'"),
])
def test_recipe_reports_bad_config_in_one_line_with_exit_2(args, message, image_shards, tmp_path):
    cmd = [sys.executable, str(ROOT / "recipes" / "clip.py"), f"output_dir={tmp_path / 'run'}",
           f"data.train={image_shards}", "tensorboard=false", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]


def test_every_recipe_config_is_valid_for_its_recipe():
    """Each recipes/configs/<recipe>_{demo,gpu,...}.yaml passes its recipe's key and type checks."""
    import importlib.util

    root = Path(__file__).resolve().parents[1]
    configs = sorted((root / "recipes" / "configs").glob("*.yaml"))
    assert len(configs) >= 36
    from mmssl.recipe_image import check_augment, image_defaults, image_objectives, objective_class

    for path in configs:
        objective = yaml.safe_load(path.read_text()).get("objective")
        recipe = next((r for r in sorted((root / "recipes").glob("*.py"), key=lambda p: -len(p.stem))
                       if path.stem.startswith(r.stem + "_")), None)
        if recipe is None:  # an image method, for recipes/image_ssl.py
            assert path.stem.rsplit("_", 1)[0] == objective, path.name
            cfg = from_cli(image_defaults(objective), ["--config", str(path)])
            check_augment(cfg, objective_class(objective).views)
            continue
        spec = importlib.util.spec_from_file_location(f"recipe_{recipe.stem}", recipe)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        # A recipe whose keys follow the method it trains (recipes/fixmatch.py) gives them per method.
        from_cli(module.defaults(objective) if objective else module.DEFAULTS, ["--config", str(path)])
    # Every image method has its CPU demo and its GPU config.
    for name in image_objectives():
        assert {f"{name}_demo.yaml", f"{name}_gpu.yaml"} <= {p.name for p in configs}, name


def test_empty_eval_tasks_measure_nothing_and_read_nothing():
    """`eval_tasks=[]` used to fall through to the joint image-text path and crash on a backbone."""
    from mmssl.eval.tasks import run_tasks

    assert run_tasks(object(), [], "no/such/shards") == {}


def test_data_val_follows_data_train_where_it_was_the_same_folder():
    from mmssl.train import TRAIN_DEFAULTS
    from mmssl.config import set_defaults

    same = set_defaults(TRAIN_DEFAULTS, {"data": {"train": "shards/demo", "val": "shards/demo"}})
    cfg = merge(same, None, ["data.train=/mine"])
    assert cfg["data"]["val"] == "/mine" and cfg.followed == {"data.val"} and "data.val" not in cfg.explicit
    # A YAML that names both, then only data.train on the command line: still the same folder.
    cfg = merge(same, {"data": {"train": "/a", "val": "/a"}}, ["data.train=/b"])
    assert cfg["data"]["val"] == "/b"
    # Set by the user in any layer, or a different folder (or none) before: left alone.
    assert merge(same, None, ["data.train=/mine", "data.val=/held"])["data"]["val"] == "/held"
    assert merge(same, {"data": {"val": "/held"}}, ["data.train=/mine"])["data"]["val"] == "/held"
    assert merge(TRAIN_DEFAULTS, None, ["data.train=/mine"])["data"]["val"] == ""
    cfg = merge(same, {"data": {"train": "/a", "val": "/v"}}, ["data.train=/b"])
    assert cfg["data"]["val"] == "/v" and not cfg.followed


def test_a_followed_data_val_without_a_held_out_split_skips_evaluation(image_shards, tmp_path):
    """The user's folder from make_shards has a val split: it is scored. A folder of tars whose names
    say no split (img2dataset's 00000.tar) is the training set itself: evaluation is skipped."""
    from mmssl.config import Key
    from mmssl.data import DataSpecError
    from mmssl.preflight import follow_train
    from mmssl.train import TRAIN_DEFAULTS
    from mmssl.config import set_defaults

    same = set_defaults(TRAIN_DEFAULTS, {"data": {"train": "shards/demo", "val": "shards/demo"},
                                         "eval_split": Key("val", "split scored")})
    said = []
    cfg = merge(same, None, [f"data.train={image_shards}"])
    follow_train(cfg, said.append)
    assert cfg["data"]["val"] == str(image_shards) and said == ["data.val follows data.train: evaluating on its "
                                                                "'val' split"]
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "00000.tar").write_bytes(next(image_shards.glob("train-*.tar")).read_bytes())
    cfg = merge(same, None, [f"data.train={flat}"])
    follow_train(cfg, said.append)
    assert cfg["data"]["val"] == "" and said[-1].startswith(f"data.train ({flat}) names no held-out split")
    # A demo config's `eval_split: test` on a folder with train and val: one line naming its splits.
    cfg = merge(same, {"eval_split": "test"}, [f"data.train={image_shards}"])
    with pytest.raises(DataSpecError, match=r"data.val follows data.train: .*no 'test' split \(it has: train, val\); "
                                            "set eval_split to one of its splits"):
        follow_train(cfg, said.append)


def test_naming_another_encoder_starts_from_its_own_config():
    """A spec's `config` belongs to its `name`: a Hub id or torchvision name given alone must not be
    rebuilt from the default's transformers architecture."""
    from mmssl.recipe_image import build_objective, image_defaults

    simclr = image_defaults("simclr")
    assert merge(simclr, None, ["backbone.name=facebook/dinov2-small"])["backbone"]["config"] == {}
    tweaked = merge(simclr, None, ["backbone.config.depths=[2, 2, 2]"])["backbone"]["config"]
    assert tweaked["model_type"] == "resnet" and tweaked["depths"] == [2, 2, 2]
    vit = {"name": "mmssl_vit", "config": {"image_size": 32, "patch_size": 4, "dim": 32, "depth": 1, "heads": 2}}
    cfg = merge(image_defaults("mae"), {"backbone": vit}, [])
    assert cfg["backbone"]["config"] == vit["config"] and build_objective(cfg).backbone.out_dim == 32
    # The ViT's own size and the crops' size must agree, before any data is read.
    with pytest.raises(ConfigError, match="backbone.config.image_size is 32 but image_size is 64"):
        build_objective(merge(image_defaults("mae"), {"backbone": vit}, ["image_size=64"]))
    with pytest.raises(ConfigError, match="MAE needs mmssl's ViT"):
        build_objective(merge(image_defaults("mae"), None, ["backbone.name=resnet18"]))
    assert build_objective(merge(image_defaults("mae"), None, [])).backbone.out_dim == 192  # its ViT by default


def test_an_augment_key_a_method_never_reads_is_refused():
    from mmssl.recipe_image import check_augment, image_defaults, objective_class

    for name, key in (("mae", "augment.blur=0.5"), ("rotation", "augment.color=0.5"), ("simclr", "augment.n_local=2")):
        with pytest.raises(ConfigError, match=f"{key.split('=')[0]} does nothing for {name}"):
            check_augment(merge(image_defaults(name), None, [key]), objective_class(name).views)
    # Multi-crop reads blur and solarize now; the defaults, set by nobody, are never refused.
    check_augment(merge(image_defaults("dino"), None, ["augment.blur=0.1", "augment.solarize=0.2"]), "multi_crop")
    check_augment(merge(image_defaults("mae"), None, []), "one_image")
    # The workers' square for device augmentation, set while the workers augment: refused too.
    with pytest.raises(ConfigError, match="augment.load_size does nothing with augment.on=workers"):
        check_augment(merge(image_defaults("simclr"), None, ["augment.load_size=64"]), "two_views")
    check_augment(merge(image_defaults("simclr"), None, ["augment.load_size=64", "augment.on=device"]), "two_views")
