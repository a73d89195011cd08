"""Official checkpoints in and out (revdsl.weights, `revdsl convert`).

The reference names and shapes in tests/data/reference_names/ were listed by instantiating the
official code (SlowFast's MViT class for REV_VIT_S and REV_MVIT_B_16_CONV, RevBiFPN's
revbifpn_s0/s3) and dumping its state dict's names and shapes: the mapping is checked against
what the official code builds, at the real sizes, tensor by tensor."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import revdsl
from revdsl.cli import main
from revdsl.files import parse_sets
from revdsl.weights import ConversionError, to_ours, to_reference, unwrap

ROOT = Path(__file__).resolve().parent.parent
SPECS = ROOT / "specs"
NAMES = Path(__file__).parent / "data" / "reference_names"

OFFICIAL = {
    # reference names file: (spec, --set values, source)
    "slowfast_REV_VIT_S": ("rev_vit.rev", [], "slowfast"),
    "slowfast_REV_MVIT_B_16_CONV": ("rev_mvit.rev", [], "slowfast"),
    "revbifpn_s0": ("rev_bifpn.rev", [], "revbifpn"),
    "revbifpn_s3": ("rev_bifpn.rev", ["width=8/3", "image=288", "num_ext=3",
                                      "stochastic_depth=0.05"], "revbifpn"),
}
VIT = dict(depth=2, dim=32, heads=2, image=32, patch=8)


def _model(spec: str, sets: list[str] | dict, **kw: object) -> torch.nn.Module:
    over = parse_sets(sets) if isinstance(sets, list) else sets
    return revdsl.load(SPECS / spec, **over).create_model(**kw)


def _official(name: str) -> dict[str, list[int]]:
    return json.loads((NAMES / f"{name}.json").read_text())


def _random_state(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        if name.endswith("num_batches_tracked"):
            out[name] = torch.randint(0, 1000, shape, generator=g)
        else:
            out[name] = torch.randn(shape, generator=g)
    return out


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_every_official_tensor_has_its_place(name: str) -> None:
    """Export names and shapes equal the official model's, and an official state dict with
    random values goes in and comes back out equal, every tensor (nothing dropped, nothing
    swapped between two tensors of different shape or of the same shape)."""
    spec, sets, source = OFFICIAL[name]
    official = _official(name)
    model = _model(spec, sets)
    exported = to_reference(model, source)
    assert {k: list(v.shape) for k, v in exported.items()} == official
    state = _random_state(official)
    result = to_ours(model, state, source)
    assert result.unexpected == []
    model.load_state_dict(result.state_dict)
    back = to_reference(model, source)
    assert set(back) == set(state)
    for k, v in state.items():
        assert torch.equal(back[k], v), k
    # every value lands once: the values are distinct random draws, so a tensor read twice or
    # into the wrong place would show as a repeated or missing value
    seen = sorted(float(v.flatten()[0]) for k, v in result.state_dict.items()
                  if v.numel() and v.is_floating_point())
    assert len(seen) == len(set(seen))


def test_slowfast_names_by_hand() -> None:
    """A few correspondences written out from SlowFast's module tree (not from the mapping):
    its layer list counts transitions, q/k/v stack into our qkv, the pooling Conv3d loses its
    frame axis, the flat position table is ours on the H x W grid."""
    mvit = _model("rev_mvit.rev", [])
    state = _random_state(_official("slowfast_REV_MVIT_B_16_CONV"))
    ours = to_ours(mvit, state, "slowfast").state_dict
    assert torch.equal(ours["transition0.fuse.fc1.weight"],
                       state["rev_backbone.layers.1.pre_q_fuse.fuse_fn.fc1.weight"])
    assert torch.equal(ours["stage1.blocks.0.norm1.weight"],
                       state["rev_backbone.layers.2.F.norm.weight"])
    assert torch.equal(ours["transition0.attn.attn.pool_q.weight"],
                       state["rev_backbone.layers.1.F.attn.pool_q.weight"][:, :, 0])
    assert torch.equal(ours["pos_embed.weight"].reshape(1, 56 * 56, 96), state["pos_embed"])
    assert torch.equal(ours["head.weight"], state["head.projection.weight"])
    vit = _model("rev_vit.rev", VIT, num_classes=10)
    vstate = to_reference(vit, "slowfast")
    qkv = vit.state_dict()["body.blocks.1.attn.qkv.weight"]
    assert torch.equal(qkv[32:64], vstate["rev_backbone.layers.1.F.attn.k.weight"])


def test_revbifpn_names_by_hand() -> None:
    """RevBiFPN-S0's third silo (rev_stack.9: scales 0-2 in, a fourth scale made) holds
    f.xform_2_3 (scale 2 -> new scale 3, 80 -> 160 channels, stride 2) and the top-down
    g.xform_0_1.0 (from the coarsest scale 3 to scale 2: the silo is built on reversed scales)."""
    model = _model("rev_bifpn.rev", [])
    state = _random_state(_official("revbifpn_s0"))
    ours = to_ours(model, state, "revbifpn").state_dict
    silo = model.backbone.blocks[8]
    by_step = {(s.target, r): m for s in silo.STEPS if getattr(s, "modules", ())
               for r, m in zip(s.reads, s.modules, strict=True)}
    up = by_step[("s3", "s2")]
    down = by_step[("s2", "s3")]
    assert torch.equal(ours[f"backbone.blocks.8.{up}.project.conv.weight"],
                       state["rev_stack.9.f.xform_2_3.project_conv.conv.weight"])
    assert torch.equal(ours[f"backbone.blocks.8.{down}.dw.norm.running_var"],
                       state["rev_stack.9.g.xform_0_1.0.dw_conv.norm.running_var"])
    assert torch.equal(ours["backbone.blocks.0.mbconv2.se.expand.weight"],
                       state["rev_stack.1.rev_transform_0.g.xform_0_1.se.se.3.weight"])
    assert torch.equal(ours["fc.weight"], state["head.fc.weight"])


def _slowfast_revvit(state: dict[str, torch.Tensor], x: torch.Tensor, heads: int,
                     patch: int) -> torch.Tensor:
    """RevViT written from SlowFast's equations over its own names (an independent meaning):
    two streams of patch tokens, X1 += Attn(LN(X2)), X2 += MLP(LN(X1)); concat, LN, mean,
    projection. LayerNorm eps 1e-6."""
    def ln(t: torch.Tensor, p: str) -> torch.Tensor:
        return F.layer_norm(t, t.shape[-1:], state[p + ".weight"], state[p + ".bias"], 1e-6)

    def lin(t: torch.Tensor, p: str) -> torch.Tensor:
        return F.linear(t, state[p + ".weight"], state[p + ".bias"])

    t = F.conv2d(x, state["patch_embed.proj.weight"], state["patch_embed.proj.bias"],
                 stride=patch).flatten(2).transpose(1, 2) + state["pos_embed"]
    x1 = x2 = t
    n_layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("rev_backbone"))
    for i in range(n_layers):
        p = f"rev_backbone.layers.{i}."
        h = ln(x2, p + "F.norm")
        b, n, c = h.shape
        q, k, v = (lin(h, p + f"F.attn.{w}").reshape(b, n, heads, c // heads).transpose(1, 2)
                   for w in "qkv")
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(c // heads), dim=-1) @ v
        x1 = x1 + lin(a.transpose(1, 2).reshape(b, n, c), p + "F.attn.proj")
        h = ln(x1, p + "G.norm")
        x2 = x2 + lin(F.gelu(lin(h, p + "G.mlp.fc1")), p + "G.mlp.fc2")
    z = ln(torch.cat([x1, x2], -1), "norm").mean(1)
    return lin(z, "head.projection")


def test_converted_revvit_computes_slowfasts_function() -> None:
    """Weights in SlowFast's names, converted, give the same logits and input gradient as
    SlowFast's equations evaluated on the original names (float64, reversible backward)."""
    model = _model("rev_vit.rev", VIT, num_classes=10, drop_path_rate=0.0).double()
    shapes = {k: list(v.shape) for k, v in to_reference(model, "slowfast").items()}
    state = {k: v.double() * 0.3 for k, v in _random_state(shapes, seed=3).items()}
    model.load_reference_state_dict({"model_state": state}, "slowfast")
    x = torch.randn(3, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    with torch.no_grad():
        y.copy_(x)
    ours = model.train()(x)
    ref = _slowfast_revvit(state, y, heads=2, patch=8)
    assert (ours - ref).abs().max().item() < 1e-12
    ours.square().sum().backward()
    ref.square().sum().backward()
    assert x.grad is not None and y.grad is not None
    assert (x.grad - y.grad).abs().max().item() < 1e-12


def test_a_different_configuration_is_refused_by_name() -> None:
    state = _random_state({k: list(v.shape) for k, v in
                           to_reference(_model("rev_vit.rev", VIT, num_classes=10),
                                        "slowfast").items()})
    with pytest.raises(ConversionError, match=r"2 blocks and this model 3 \(depth=3\)"):
        to_ours(_model("rev_vit.rev", {**VIT, "depth": 3}, num_classes=10), state, "slowfast")
    with pytest.raises(ConversionError, match=r"configuration differs: dim=64 here, 32 in"):
        to_ours(_model("rev_vit.rev", {**VIT, "dim": 64}, num_classes=10), state, "slowfast")
    with pytest.raises(ConversionError, match=r"num_classes=1000 here, 10 in the checkpoint"):
        to_ours(_model("rev_vit.rev", VIT), state, "slowfast")
    broken = dict(state)
    del broken["norm.bias"]
    broken["head.extra"] = torch.zeros(1)
    with pytest.raises(ConversionError) as info:
        to_ours(_model("rev_vit.rev", VIT, num_classes=10), broken, "slowfast")
    assert "missing from the checkpoint (1):\n  norm.bias" in str(info.value)
    assert "unexpected in the checkpoint (1):\n  head.extra" in str(info.value)
    result = to_ours(_model("rev_vit.rev", VIT, num_classes=10),
                     {**state, "head.extra": torch.zeros(1)}, "slowfast", strict=False)
    assert result.unexpected == ["head.extra"]
    with pytest.raises(ConversionError, match="mapped for the models RevBiFPN"):
        to_ours(_model("rev_vit.rev", VIT), state, "revbifpn")
    with pytest.raises(ConversionError, match="holds no state dict"):
        unwrap({"epoch": 3})


def test_convert_command_both_ways(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = _model("rev_vit.rev", VIT, num_classes=10)
    official = to_reference(model, "slowfast")
    ckpt = tmp_path / "REV_VIT.pyth"
    torch.save({"model_state": official, "epoch": 300, "cfg": "MVIT:\n  DEPTH: 2\n"}, ckpt)
    sets = [a for k, v in VIT.items() for a in ("--set", f"{k}={v}")]
    ours = tmp_path / "weights.pt"
    assert main(["convert", str(SPECS / "rev_vit.rev"), str(ckpt), "--from", "slowfast",
                 "-o", str(ours), "--num-classes", "10", *sets]) == 0
    fresh = _model("rev_vit.rev", VIT, num_classes=10)
    fresh.load_state_dict(torch.load(ours, weights_only=True))
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    back = tmp_path / "back.pyth"
    assert main(["convert", str(SPECS / "rev_vit.rev"), str(ours), "--to", "slowfast",
                 "-o", str(back), *sets, "--num-classes", "10"]) == 0
    again = torch.load(back, weights_only=True)["model_state"]
    assert set(again) == set(official)
    assert all(torch.equal(again[k], official[k]) for k in official)
    capsys.readouterr()
    # a mismatch: exit 1, the reason by name, no traceback, no output file
    bad = tmp_path / "bad.pt"
    assert main(["convert", str(SPECS / "rev_vit.rev"), str(ckpt), "--from", "slowfast",
                 "-o", str(bad), *sets]) == 1
    err = capsys.readouterr().err
    assert "num_classes=1000 here, 10 in the checkpoint" in err and "Traceback" not in err
    assert not bad.exists()
    assert main(["convert", str(SPECS / "rev_vit.rev"), str(tmp_path / "none.pyth"),
                 "--from", "slowfast", "-o", str(bad), *sets]) == 1
    assert "no such checkpoint file" in capsys.readouterr().err
    junk = tmp_path / "junk.pyth"
    junk.write_bytes(b"not a checkpoint")
    assert main(["convert", str(SPECS / "rev_vit.rev"), str(junk),
                 "--from", "slowfast", "-o", str(bad), *sets]) == 1
    assert "cannot read the checkpoint" in capsys.readouterr().err
    assert not bad.exists()
    # weights do not depend on input sizes: --size is refused rather than ignored
    assert main(["convert", str(SPECS / "rev_vit.rev"), str(ckpt), "--from", "slowfast",
                 "-o", str(bad), "--size", "S=32", *sets]) == 1
    assert "convert takes no --size" in capsys.readouterr().err
    assert not bad.exists()
