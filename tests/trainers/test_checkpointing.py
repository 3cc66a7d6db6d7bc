"""Training checkpoints: weights-only loadable, evaluate-loadable, resume from the newest valid, --initPth."""

from __future__ import annotations

import pytest
import torch

from base.errors import CheckpointError, ConfigError
from lib.tools.checkpoint import build_model_from_checkpoint, save_model
from models.gfrtm import GFRTM
from trainers.checkpointing import (
    find_resume_checkpoint,
    init_from_checkpoint,
    list_checkpoints,
    load_training_checkpoint,
    restore_training_state,
    save_training_checkpoint,
)
from trainers.loop import build_optimizer


def _trained(seed: int = 0, steps: int = 2):
    torch.manual_seed(seed)
    model = GFRTM("resnet18")
    opt = build_optimizer(model, 5e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, 127, 0.1)
    for _ in range(steps):
        opt.zero_grad()
        sum(p.float().pow(2).sum() for p in model.parameters()).backward()
        opt.step()
    if steps:
        sched.step()
    return model, opt, sched


def _save(path, model, opt, sched, epoch):
    save_training_checkpoint(path, model, name="run", epoch=epoch, optimizer=opt, scheduler=sched,
                             config={"name": "run", "size": [64, 112]}, stats={"loss": 1.5, "lr": 5e-4})


def _assert_nested_equal(a, b):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_nested_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_nested_equal(x, y)
    else:
        assert a == b


def test_optimizer_groups_and_weight_decay():
    model = GFRTM("resnet18")
    opt = build_optimizer(model, 5e-4)
    groups = {g["name"]: g for g in opt.param_groups}
    assert list(groups) == ["convGS", "Tmatching", "Convert_Diff", "refiner"]
    assert [groups[n]["weight_decay"] for n in groups] == [0.0, 1e-5, 1e-5, 1e-5]
    assert all(g["amsgrad"] and g["lr"] == 5e-4 and g["betas"] == (0.9, 0.999) for g in opt.param_groups)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_checkpoint_is_weights_only_and_loads_for_evaluation(tmp_path):
    model, opt, sched = _trained()
    path = tmp_path / "run_ep0001.pth"
    _save(path, model, opt, sched, 1)
    raw = torch.load(path, weights_only=True)
    assert raw["epoch"] == 1 and raw["name"] == "run" and raw["stats"] == {"loss": 1.5, "lr": 5e-4}
    assert raw["config"]["size"] == [64, 112] and raw["ftext"] == "resnet18"
    loaded, report = build_model_from_checkpoint(path)
    assert "G-FRTM" in report
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_resume_restores_optimizer_and_scheduler(tmp_path):
    model, opt, sched = _trained()
    _save(tmp_path / "run_ep0001.pth", model, opt, sched, 1)
    fresh, fresh_opt, fresh_sched = _trained(seed=5, steps=0)
    epoch = restore_training_state(load_training_checkpoint(tmp_path / "run_ep0001.pth"), fresh, fresh_opt,
                                   fresh_sched)
    assert epoch == 1
    _assert_nested_equal(fresh_opt.state_dict(), opt.state_dict())
    assert fresh_sched.state_dict() == sched.state_dict()
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value)


def test_newest_valid_checkpoint_is_used(tmp_path):
    model, opt, sched = _trained()
    for epoch in (1, 2, 10):
        _save(tmp_path / f"run_ep{epoch:04d}.pth", model, opt, sched, epoch)
    save_model(tmp_path / "run_ep0011.pth", model)  # weights only: not a training checkpoint
    (tmp_path / "run_ep0012.pth").write_bytes((tmp_path / "run_ep0010.pth").read_bytes()[:500])  # truncated
    (tmp_path / "other_ep0099.pth").write_bytes(b"")
    assert [e for e, _ in list_checkpoints(tmp_path, "run")] == [1, 2, 10, 11, 12]
    with pytest.warns(UserWarning, match="skipping checkpoint"):
        path, state = find_resume_checkpoint(tmp_path, "run", log=lambda m: None)
    assert path.name == "run_ep0010.pth" and state["epoch"] == 10
    assert find_resume_checkpoint(tmp_path / "missing", "run") is None
    with pytest.raises(CheckpointError, match="no epoch, optimizer, scheduler"):
        load_training_checkpoint(tmp_path / "run_ep0011.pth")


def test_init_from_frtm_and_gfrtm_checkpoints(tmp_path):
    torch.manual_seed(1)
    source = GFRTM("resnet18")
    frtm = {k: v for k, v in source.state_dict().items()
            if k.startswith("refiner.") and not k.startswith("refiner.Diff_process.")}
    torch.save(frtm, tmp_path / "frtm.pth")
    torch.manual_seed(2)
    model = GFRTM("resnet18")
    gate_before = model.convGS[4].weight.clone()
    report = init_from_checkpoint(model, tmp_path / "frtm.pth")
    assert "loaded 140 keys from FRTM" in report
    assert "convGS, Tmatching, Convert_Diff, refiner.Diff_process (49 keys)" in report
    assert torch.equal(model.refiner.TSE["layer4"].reduce[0].weight, source.refiner.TSE["layer4"].reduce[0].weight)
    assert torch.equal(model.convGS[4].weight, gate_before)

    save_model(tmp_path / "gfrtm.pth", source)
    report = init_from_checkpoint(model, tmp_path / "gfrtm.pth")
    assert "loaded 189 keys from G-FRTM" in report and "every model key was loaded" in report
    assert torch.equal(model.convGS[4].weight, source.convGS[4].weight)

    with pytest.raises(ConfigError, match="resnet101"):
        init_from_checkpoint(GFRTM("resnet101"), tmp_path / "gfrtm.pth")
