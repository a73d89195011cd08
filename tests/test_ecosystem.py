"""Fitting the PyTorch ecosystem: torch.compile on every generated model, autocast, DDP and
FSDP (2 processes, gloo), state dicts shared between modes, in-process loading."""

from __future__ import annotations

import copy
import linecache
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import revdsl
from revdsl.errors import RevdslError
from revdsl.testing import grad_floor, rel_err, without_randomness
from tests.conftest import ROOT, SPECS, load_spec
from tests.test_tools import SMALL

# BiFPN in plain mode compiles slowly (minutes with inductor): a shallower pyramid here
COMPILE = {**SMALL, "rev_bifpn.rev": dict(image=64, num_ext=0, reps=1)}


def _size(spec: str) -> int:
    kw = COMPILE[spec]
    return int(kw.get("image") or max(kw["sizes"]))  # type: ignore[arg-type]


@pytest.mark.parametrize("spec", sorted(COMPILE))
@pytest.mark.parametrize("mode", ["reversible", "baseline"])
def test_torch_compile_matches_eager(spec: str, mode: str) -> None:
    torch._dynamo.reset()
    mod = load_spec(spec, **COMPILE[spec])
    torch.manual_seed(0)
    model = without_randomness(mod.create_model(num_classes=10))
    model.reversible = mode == "reversible"
    eager = copy.deepcopy(model)
    # inductor for the reversible model (its segments are one graph break each, so it compiles
    # fast); the plain model is traced whole, which inductor takes minutes to compile on 2 CPU
    # cores: aot_eager checks the same tracing (dynamo + AOT autograd) without code generation
    compiled = torch.compile(model, backend="inductor" if model.reversible else "aot_eager")
    x = torch.randn(2, 3, _size(spec), _size(spec))
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, eager)]
    for fn, opt in zip((compiled, eager), opts, strict=True):
        opt.zero_grad()
        F.cross_entropy(fn(x), torch.tensor([1, 3])).backward()
        opt.step()
    floor = grad_floor([p.grad for p in eager.parameters() if p.grad is not None])
    # weights that start at zero and get only rounding noise (a key norm's bias) are compared
    # on the scale of the model's weights
    w_floor = 1e-3 * max(p.detach().abs().max().item() for p in eager.parameters())
    for (name, a), b in zip(model.named_parameters(), eager.parameters(), strict=True):
        if b.grad is not None:
            assert rel_err(a.grad, b.grad, floor) < 1e-4, name
        assert rel_err(a.detach(), b.detach(), w_floor) < 1e-4, name
    model.eval()
    eager.eval()
    with torch.no_grad():
        assert rel_err(compiled(x), eager(x)) < 1e-4


def test_autocast_recompute_runs_at_forward_precision() -> None:
    mod = load_spec("rev_vit.rev", **SMALL["rev_vit.rev"])
    torch.manual_seed(0)
    model = mod.create_model(num_classes=10)
    seen: list[tuple[bool, torch.dtype]] = []
    flag = sys.modules[type(model).__module__]._RECOMPUTE  # set while the backward recomputes
    fc = model.body.blocks[1].mlp.fc1
    # (a wrapped forward, not a hook: forward hooks do not fire again in the recompute)
    plain_forward = fc.forward

    def observed(x: torch.Tensor) -> torch.Tensor:
        o = plain_forward(x)
        seen.append((flag.active, o.dtype))
        return o

    fc.forward = observed
    x = torch.randn(4, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3])

    def step(reversible: bool, trace: list | None = None) -> dict[str, torch.Tensor]:
        model.reversible = reversible
        model.zero_grad()
        model.body.trace = trace
        torch.manual_seed(3)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            F.cross_entropy(model(x), y).backward()
        model.body.trace = None
        return {n: p.grad.float().clone() for n, p in model.named_parameters()}

    trace: list = []
    rev = step(True, trace)
    assert (True, torch.bfloat16) in seen and (False, torch.bfloat16) in seen, seen
    plain = step(False)
    fwd = [s for k, s in trace if k == "forward"]
    bwd = [s for k, s in trace if k == "backward"][::-1]
    rebuilt = max(rel_err(b[k].float(), f[k].float()) for f, b in zip(fwd, bwd) for k in f)
    assert rebuilt < 2e-2  # bfloat16 has 8 bits of mantissa (eps 7.8e-3)
    assert max(rel_err(rev[n], plain[n], grad_floor(plain)) for n in plain) < 5e-2


def _run_example(*args: str) -> str:
    proc = subprocess.run([sys.executable, "examples/ddp.py", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


VIT_SETS = ["--set", "depth=4", "--set", "dim=32", "--set", "heads=2", "--set", "image=32",
            "--set", "patch=8"]


@pytest.mark.parametrize("extra", [[], ["--baseline"], ["--fsdp"]],
                         ids=["reversible", "baseline", "fsdp2"])
def test_ddp_matches_one_process(extra: list[str]) -> None:
    out = _run_example(*VIT_SETS, *extra)
    assert "vs one process" in out and "3 steps" in out


def test_fsdp_per_block_matches_one_process_and_halves_what_a_rank_holds() -> None:
    """fully_shard on every reversible block: the engine gathers each block's parameters for
    its forward and its recompute and reduce-scatters its gradients (2 gloo processes, float64,
    against one process; the example exits 1 past 1e-10)."""
    out = _run_example(*VIT_SETS, "--fsdp-per-block")
    assert "FSDP2 per block (2 processes, gloo) vs one process, reversible" in out
    ratio = float(out.split(" of one process")[0].rsplit("= ", 1)[1])
    assert 0.45 < ratio < 0.55, out


def test_fsdp_per_block_with_stored_transitions() -> None:
    out = _run_example("--spec", "specs/rev_mvit.rev", "--set", "image=32", "--set", "dim=8",
                       "--set", "kv_stride=2", "--set", "transitions=[1, 3]", "--set",
                       "depth=6", "--fsdp-per-block")
    assert "FSDP2 per block (2 processes, gloo) vs one process, reversible" in out


def test_fsdp_inside_a_reversible_block_is_refused(tmp_path: Path) -> None:
    """Sharding a part of a reversible block (not the block) is refused with the fix named;
    sharding whole blocks composes with chunked recompute and a memory plan. One process
    (world size 1) is enough to see both."""
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rdzv'}", rank=0,
                            world_size=1)
    try:
        model = load_spec("rev_vit.rev", **SMALL["rev_vit.rev"]).create_model()
        fully_shard(model.body.blocks[0].attn)
        fully_shard(model)
        with pytest.raises(RuntimeError, match=r"shard whole blocks \(fully_shard\(block\)"):
            model(torch.randn(2, 3, 32, 32)).sum().backward()
        # and sharded whole blocks with chunked recompute and a plan keeping one block: the
        # gradients of the unsharded model (the engine's FSDP path accumulates into .grad)
        mod = load_spec("rev_vit.rev", **SMALL["rev_vit.rev"])
        torch.manual_seed(0)
        plain = mod.create_model(num_classes=4).double()
        torch.manual_seed(0)
        sharded = mod.create_model(num_classes=4).double()
        for block in sharded.body.blocks:
            fully_shard(block)
        fully_shard(sharded)
        x = torch.randn(3, 3, 32, 32, dtype=torch.float64)
        for model in (plain, sharded):
            model.set_recompute_chunks(3)
            model.set_plan({"body": [True, False] + [True] * (len(model.body.blocks) - 2)})
            torch.manual_seed(1)
            model(x).square().sum().backward()
        for (name, p), q in zip(plain.named_parameters(), sharded.parameters(), strict=True):
            g = q.grad.full_tensor() if hasattr(q.grad, "full_tensor") else q.grad
            assert torch.allclose(g, p.grad, rtol=1e-10, atol=1e-12), name
    finally:
        dist.destroy_process_group()


def test_fsdp_without_a_post_backward_is_refused() -> None:
    """If FSDP2's per-group post-backward is not there (another torch version), a sharded
    reversible block's backward stops with an error instead of leaving its gradients
    unreduced (one rank's gradients, silently)."""
    from revdsl.runtime.hooks import _fsdp_backward_done

    class Unknown(torch.nn.Module):
        def _get_fsdp_state(self) -> object:
            return object()

    with pytest.raises(RuntimeError, match="no per-group post-backward"):
        _fsdp_backward_done(Unknown())


def test_ddp_with_stored_transitions() -> None:
    out = _run_example("--spec", "specs/rev_mvit.rev", "--set", "image=32", "--set", "dim=8",
                       "--set", "kv_stride=2", "--set", "transitions=[1, 3]", "--set",
                       "depth=6")
    assert "DDP (2 processes, gloo) vs one process, reversible" in out


def test_state_dict_is_shared_between_modes(tmp_path: Path) -> None:
    mod = load_spec("rev_mvit.rev", **SMALL["rev_mvit.rev"])
    torch.manual_seed(0)
    rev = mod.create_model(num_classes=10)
    opt = torch.optim.SGD(rev.parameters(), lr=0.1)
    x = torch.randn(2, 3, 32, 32)
    F.cross_entropy(rev(x), torch.tensor([1, 2])).backward()
    opt.step()  # a trained checkpoint, saved from the reversible model
    path = tmp_path / "ckpt.pt"
    torch.save(rev.state_dict(), path)
    base = mod.create_model(num_classes=10, reversible=False)
    assert list(base.state_dict()) == list(rev.state_dict())
    base.load_state_dict(torch.load(path))  # strict
    for model in (rev, base):
        model.eval()
    with torch.no_grad():
        assert torch.equal(base(x), rev(x))
    # and back: a baseline checkpoint into a reversible model
    again = mod.create_model(num_classes=10)
    again.load_state_dict(base.state_dict())
    again.eval()
    with torch.no_grad():
        assert torch.equal(again(x), base(x))


def test_load_and_compile_spec_in_process() -> None:
    source = revdsl.compile_spec(SPECS / "rev_vit.rev", depth=2, dim=32, heads=2)
    assert source.splitlines()[0].startswith("# Generated by revdsl")
    imports = [ln for ln in source.splitlines() if ln.startswith(("import ", "from "))]
    assert all("revdsl" not in ln for ln in imports) and "import torch" in imports
    mod = revdsl.load(str(SPECS / "rev_vit.rev"), depth=2, dim=32, heads=2)
    assert mod.__revdsl_source__ == source  # type: ignore[attr-defined]
    model = mod.create_model(num_classes=3)
    assert len(model.body.blocks) == 2
    # tracebacks point at the generated lines
    try:
        model(torch.randn(1, 3, 16, 16))  # wrong image size
    except ValueError as exc:
        assert str(exc) == "img must have shape [*, 3, 224, 224], got [1, 3, 16, 16]"
        frames = traceback.extract_tb(exc.__traceback__)
        generated = [f for f in frames if f.filename.startswith("<revdsl:RevViT:")]
        assert generated and all(f.line for f in generated)
        assert "check_input('img', img, (None, 3, 224, 224))" in linecache.getline(
            generated[1].filename, generated[1].lineno)
    else:
        raise AssertionError("a 16-pixel image must not broadcast against a 224-pixel model")
    # the spec text itself works too, and errors are RevdslErrors with positions
    text = (SPECS / "rev_vit.rev").read_text()
    from_text = revdsl.compile_spec(text, depth=2)
    assert "from <spec>" in from_text
    assert from_text.replace("<spec>", "rev_vit.rev") == revdsl.compile_spec(
        SPECS / "rev_vit.rev", depth=2)
    with pytest.raises(RevdslError, match="declares no parameter 'deep'"):
        revdsl.load(str(SPECS / "rev_vit.rev"), deep=3)
    with pytest.raises(RevdslError, match="no such spec file"):
        revdsl.load("specs/nope.rev")


def test_digits_example_runs(tmp_path: Path) -> None:
    plot = tmp_path / "loss.png"
    proc = subprocess.run([sys.executable, "examples/train_digits.py", "--epochs", "2",
                           "--plot", str(plot)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    first = float(proc.stdout.split("first epoch ")[1].split()[0])
    assert first < 1e-5, proc.stdout  # the same training, up to float32 rounding
    assert plot.read_bytes()[:4] == b"\x89PNG"
