"""RevSwin (specs/rev_swin.rev): minREV's reversible Swin written with general ops.

The function was compared from outside with minREV's revswin.py on ported weights (float64:
outputs within 2e-15, parameter gradients within 6e-15 with reversible backprop, at Swin-T and at
a small size; see BENCHMARKS.md). These tests pin what that comparison relies on, against
independent meanings: minREV's own equations written out here, and the reference evaluator."""

from __future__ import annotations

import torch

import revdsl
from revdsl.pipeline import check_text
from revdsl.stats import stats
from tests.conftest import SPECS

SMALL = dict(image=56, embed=16, depths=[2, 2], heads=[2, 4])


def test_swin_t_has_minrevs_parameter_count() -> None:
    report = check_text((SPECS / "rev_swin.rev").read_text(), "rev_swin.rev")
    assert report.ok
    st = stats(report)
    assert st.params == 30_221_122  # minREV's ReversibleSwinTransformer(), instantiated
    assert 4.9e9 < st.macs < 5.1e9


def _windows(x: torch.Tensor, w: int) -> torch.Tensor:
    b, h, wd, c = x.shape
    return x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(
        b, (h // w) * (wd // w), w * w, c)


def test_a_shifted_block_is_minrevs() -> None:
    """Block 1 of a stage, written out as minREV computes it: x1 + attn(windows of the map
    rolled by -3, masked by region), left rolled (minREV discards its reverse roll); then
    x2 + mlp(norm2(y1)). Block 0 does the same without roll or mask."""
    mod = revdsl.load(str(SPECS / "rev_swin.rev"), **SMALL)
    model = mod.create_model(num_classes=10, drop_path_rate=0.0).double().eval()
    torch.manual_seed(1)
    for i, shift in ((0, 0), (1, 3)):
        blk = model.stage0.blocks[i]
        x1, x2 = (torch.randn(2, 14, 14, 16, dtype=torch.float64) for _ in range(2))
        y1, y2 = blk(x1, x2)
        u = torch.nn.functional.layer_norm(x2, (16,), blk.norm1.weight, blk.norm1.bias, 1e-5)
        if shift:
            u = torch.roll(u, (-shift, -shift), (1, 2))
        win = _windows(u, 7)
        attn = blk.attn
        b, nw, n, c = win.shape
        qkv = attn.qkv(win).reshape(b, nw, n, 3, 2, 8).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0] * 8 ** -0.5, qkv[1], qkv[2]
        logits = q @ k.transpose(-2, -1) + attn.relative_position_bias_table[
            attn.relative_position_index.view(-1)].view(n, n, -1).permute(2, 0, 1)
        if shift:
            region = torch.zeros(1, 14, 14, 1)
            cuts = (slice(0, -7), slice(-7, -shift), slice(-shift, None))
            for k_, (hs, ws) in enumerate((h, w) for h in cuts for w in cuts):
                region[:, hs, ws, :] = k_
            r = _windows(region, 7).reshape(-1, 49)
            logits = logits + ((r[:, None, :] != r[:, :, None]) * -100.0).double()[None, :, None]
        out = attn.proj((logits.softmax(-1) @ v).transpose(2, 3).reshape(b, nw, n, c))
        want1 = x1 + out.view(2, 2, 2, 7, 7, 16).permute(0, 1, 3, 2, 4, 5).reshape(2, 14, 14, 16)
        assert torch.allclose(y1, want1, atol=1e-12), i
        h = torch.nn.functional.layer_norm(y1, (16,), blk.norm2.weight, blk.norm2.bias, 1e-5)
        want2 = x2 + blk.mlp.fc2(torch.nn.functional.gelu(blk.mlp.fc1(h)))
        assert torch.allclose(y2, want2, atol=1e-12), i


def test_patch_merging_takes_minrevs_channel_order() -> None:
    """merge: fuse the streams (an MLP from 2C to C), then 2x2 patches in minREV's order
    x[0::2, 0::2], x[1::2, 0::2], x[0::2, 1::2], x[1::2, 1::2], LayerNorm, Linear."""
    mod = revdsl.load(str(SPECS / "rev_swin.rev"), **SMALL)
    model = mod.create_model(num_classes=10).double().eval()
    merge = model.merge
    x1, x2 = (torch.randn(2, 14, 14, 16, dtype=torch.float64) for _ in range(2))
    got = merge(x1, x2)
    f = merge.fuse(torch.cat([x1, x2], -1))
    m = torch.cat([f[:, 0::2, 0::2], f[:, 1::2, 0::2], f[:, 0::2, 1::2], f[:, 1::2, 1::2]], -1)
    want = merge.reduction(torch.nn.functional.layer_norm(m, (64,), merge.norm.weight,
                                                          merge.norm.bias, 1e-5))
    assert torch.allclose(got, want, atol=1e-12)


def test_reversible_training_matches_plain_autograd() -> None:
    from revdsl.loader import load_source
    from revdsl.pipeline import compile_text
    from revdsl.testing import gradient_errors, random_inputs

    compiled = compile_text((SPECS / "rev_swin.rev").read_text(), "rev_swin.rev", SMALL)
    model = load_source(compiled.source).create_model(num_classes=10).double()
    g = gradient_errors(model, random_inputs(compiled.program, batch=2))
    assert g["worst"] < 1e-9, g
