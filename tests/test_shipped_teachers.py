"""The teachers that ship with the course: each notebook's teacher, in the lab and smoke
profiles, is a file in ``atcourse/teachers/`` that matches the zoo's current key, loads on a
fresh clone without training, and reproduces the test accuracy recorded beside it."""

import json
from pathlib import Path

import pytest
import torch
from test_notebook_parameters import NOTEBOOKS, assigned

from atcourse import config, metrics, zoo
from atcourse.data import DeviceLoader, load_splits

RETRAIN = "atcourse teacher --arch {arch} --profile lab{extra} --retrain --ship"


def _notebook_setting(path: Path, profile: str) -> tuple[str, config.Config, list[int] | None]:
    """(teacher arch, the teacher's configuration, its classes) as the notebook resolves them."""
    params = {k: eval(v) for k, v in assigned(path).items()}  # literals only (tested elsewhere)
    params["profile"] = profile
    if "pretrain_classes" in params:  # notebook 06: a ViT pre-trained on other classes
        cfg = config.configure(verbose=False, **params)
        classes = [int(c) for c in cfg.pretrain_classes]
        return cfg.arch, zoo.pretrain_config(cfg), classes
    params = {k: v for k, v in params.items() if k in config.parameters()}
    cfg = config.configure(verbose=False, **params)
    return cfg.teacher_arch, cfg, None


def _settings() -> list[tuple[str, str]]:
    return [(nb.name[:2], profile) for nb in NOTEBOOKS[:7] for profile in ("smoke", "lab")]


def _retrain_command(arch: str, cfg: config.Config, classes: list[int] | None) -> str:
    extra = ""
    if classes is not None:
        extra = f" --classes {','.join(map(str, classes))} -p pretrain_scale={cfg.pretrain_scale}"
        for key in ("optimizer", "lr", "weight_decay", "warmup_epochs"):
            extra += f" -p {key}={cfg[key]}"
    return RETRAIN.format(arch=arch, extra=extra)


@pytest.mark.parametrize(("notebook", "profile"), _settings(), ids=lambda v: str(v))
def test_each_notebooks_teacher_ships_under_the_zoos_current_key(notebook, profile):
    path = next(p for p in NOTEBOOKS if p.name.startswith(notebook))
    arch, cfg, classes = _notebook_setting(path, profile)
    name = zoo.teacher_path(arch, cfg, classes=classes).name
    shipped = sorted(p.name for p in zoo.SHIPPED.glob("*.pt"))
    assert name in shipped, (
        f"notebook {notebook} ({profile}) needs the teacher {name}, which does not ship "
        f"(shipped: {shipped}); the models, the data or the recipe changed since it was "
        f"trained. Retrain and ship it with: {_retrain_command(arch, cfg, classes)}"
    )


def _shipped_sidecars() -> list[Path]:
    return sorted(zoo.SHIPPED.glob("*.json"))


def test_shipped_teachers_stay_small():
    total = sum(p.stat().st_size for p in zoo.SHIPPED.glob("*"))
    assert total < 10 * 2**20, f"the shipped teachers take {total / 2**20:.1f} MB (limit 10 MB)"


@pytest.mark.parametrize("sidecar", _shipped_sidecars(), ids=lambda p: p.stem[:40])
def test_a_shipped_teacher_loads_without_training_and_reproduces_its_test_accuracy(sidecar):
    info = json.loads(sidecar.read_text())
    recipe = config.configure(verbose=False, **{
        k: v for k, v in info["recipe"].items() if k in config.parameters() and k != "arch"
    })  # fmt: skip
    arch, classes = info["recipe"]["arch"], info["classes"]
    assert zoo.checkpoint_path(arch, recipe, classes=classes).name == info["file"], (
        f"{info['file']} no longer matches the zoo's key for its own recipe; retrain it with "
        f"{info['command']} --retrain"
    )
    model = zoo.teacher(arch, cfg=recipe.replace(teacher_epochs=recipe["epochs"],
                                                 teacher_seed=recipe["seed"],
                                                 teacher_profile=recipe["profile"]),
                        classes=classes, progress=False)  # fmt: skip
    assert model.zoo_info["shipped"] and model.zoo_info["cached"]  # loaded, not trained
    test_set = load_splits(recipe)[-1]
    if classes is not None:
        test_set = test_set.select_classes(classes)
    loader = DeviceLoader(test_set, 256, train=False, device="cpu")
    with torch.inference_mode():
        acc = metrics.accuracy(model, loader)
    assert acc == pytest.approx(info["final"]["test_acc"], abs=1.5 / len(test_set)), (
        f"{info['file']}: test accuracy {acc:.4f} now, {info['final']['test_acc']:.4f} when "
        f"it was trained; retrain it with {info['command']} --retrain"
    )
