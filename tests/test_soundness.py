"""No silent miscompiles: regression tests for specs that used to compile into modules computing
something else, or not loading, and for inputs that used to end in a traceback or a hang.

Each test names the item it guards. Semantics are checked against the reference evaluator
(revdsl/reference.py), never against the generated module itself."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest
import torch

import revdsl
from revdsl.cli import main
from revdsl.difftest import compare
from tests.conftest import SPECS

TOL = 1e-9

HEAD = """model T
arg r = 0.1
input img: [B, 4, 8]
x = linear(img, out=8)
"""
TAIL = """
z = concat(a, b, dim=-1)
output z
"""


def seg(body: str) -> str:
    return HEAD + "reversible body {\n    streams a, b = dup(x)\n" + body + "\n}" + TAIL


def cli(tmp_path: Path, text: str, *args: str, capsys: pytest.CaptureFixture[str]
        ) -> tuple[int, str]:
    spec = tmp_path / "t.rev"
    spec.write_text(text)
    out = tmp_path / "t.py"
    out.unlink(missing_ok=True)
    code = main(["compile", str(spec), "-o", str(out), *args])
    err = capsys.readouterr().err
    if code != 0:
        assert not out.exists(), "an error must not leave an output file"
    return code, err


# ---- 1-4: semantics (against the reference evaluator) -----------------------------------------


def test_1_compile_time_assignment_inside_a_segment_reaches_later_blocks() -> None:
    text = seg("""    rate = 0.0
    b += linear(a, out=8)
    rate = 0.5
    repeat i in range(2) { a += drop_path(linear(b, out=8), rate=rate)  b += linear(a, out=8) }""")
    assert "DropPath(0.5)" in revdsl.compile_spec(text)
    assert compare(text).worst < TOL


def test_1_irevnet_width_update_after_space_to_depth() -> None:
    # the write-up's spec: the width is updated after a space_to_depth inside the loop
    text = """model IRev
input img: [B, 4, 8, 8]
c = 4
reversible body {
    streams s = img
    for k in range(2) {
        a, b = chunk(s, 2, dim=1)
        b += conv2d(a, out=c // 2, kernel=3)
        a += conv2d(b, out=c // 2, kernel=3)
        s = cat(a, b, dim=1)
        s = space_to_depth(s, 2)
        c = 4 * c
    }
}
y = global_avg_pool(s)
output y
"""
    d = compare(text)
    assert d.worst < TOL, d


def test_2_argument_attribute_equal_in_every_block_is_a_constructor_argument() -> None:
    text = seg("    repeat i in range(2) { a += drop_path(linear(b, out=8), rate=r)  "
               "b += linear(a, out=8) }")
    mod = revdsl.load(text)
    model = mod.create_model(r=0.3)
    rates = {m.rate for m in model.modules() if type(m).__name__ == "DropPath"}
    assert rates == {0.3}
    assert compare(text, args={"r": 0.3}).worst < TOL


def test_2_shipped_specs_with_a_constant_rate_load() -> None:
    text = (SPECS / "rev_vit.rev").read_text().replace(
        "rate = drop_path_rate * i / (depth - 1)", "rate = drop_path_rate")
    mod = revdsl.load(text, depth=2, dim=32, heads=2, image=32, patch=8)
    mod.create_model(drop_path_rate=0.2)(torch.randn(1, 3, 32, 32))
    mod = revdsl.load(SPECS / "rev_supervit.rev", prune_at=[6])
    mod.create_model()


def test_3_simplified_update_keeps_every_module_in_the_gradient() -> None:
    text = seg("""    block {
        g = sigmoid(linear(b, out=8))
        a = a * g + a * (1 - g) + linear(b, out=8)
        b += linear(a, out=8)
    }""")
    d = compare(text)
    assert d.worst < TOL, d
    model = revdsl.load(text).create_model().double()
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    for mode in (True, False):
        model.reversible = mode
        model.zero_grad(set_to_none=True)
        model(x).square().sum().backward()
        assert all(p.grad is not None for p in model.parameters()), mode


def test_4_broadcast_update_backpropagates() -> None:
    text = seg("    a += mean(b, dim=1, keepdim=true)\n    b += linear(a, out=8)")
    d = compare(text)
    assert d.worst < TOL, d


# ---- 5: layouts -------------------------------------------------------------------------------

CONV = """model C
input img: [B, 4, 6, 6]
x = conv2d(img, out=8, kernel=3)
y = OP
output y
"""


def test_5_per_channel_op_on_an_image_must_say_its_layout(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    for op in ("layernorm(x)", "layer_scale(x)"):
        code, err = cli(tmp_path, CONV.replace("OP", op), capsys=capsys)
        assert code == 1 and "ambiguous" in err and "t.rev:4:" in err, err


def test_5_channels_first_normalises_and_scales_channels() -> None:
    text = CONV.replace("OP", 'layer_scale(layernorm(x, layout="channels_first"), init=0.5, '
                        'layout="channels_first")')
    assert compare(text).worst < TOL
    mod = revdsl.load(text)
    model = mod.create_model().double()
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    h = model.conv2d(x) if hasattr(model, "conv2d") else None
    norm = next(m for m in model.modules() if isinstance(m, torch.nn.LayerNorm))
    assert norm.normalized_shape == (8,)
    if h is not None:
        want = torch.nn.functional.layer_norm(h.permute(0, 2, 3, 1), (8,), eps=1e-6)
        want = 0.5 * want.permute(0, 3, 1, 2)
        assert torch.allclose(model(x), want, atol=1e-12)


# ---- 6: attribute domains ---------------------------------------------------------------------


@pytest.mark.parametrize("rate", ["1.5", "-0.1", "r*0/0", "r/0", "1.0"])
def test_6_drop_rates_outside_their_domain_are_positioned_errors(
        rate: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = seg(f"    a += drop_path(linear(b, out=8), rate={rate})\n    b += linear(a, out=8)")
    code, err = cli(tmp_path, text, capsys=capsys)
    assert code == 1 and "t.rev:" in err and "Traceback" not in err, err


@pytest.mark.parametrize("setting, phrase", [
    ("dim=0", "'dim' must be at least 1"),
    ("mlp_ratio=-1", "'ratio' must be in (0, inf)"),
    ("dropout=2.0", "must be in [0, 1)"),
    ("num_classes=-5", "'out' must be at least 1"),
])
def test_6_bad_settings_of_shipped_specs_are_refused(setting: str, phrase: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(SPECS / "rev_vit.rev"), "--set", setting]) == 1
    assert phrase in capsys.readouterr().err


def test_6_empty_segment_is_a_warning(capsys: pytest.CaptureFixture[str], tmp_path: Path
                                      ) -> None:
    code = main(["compile", str(SPECS / "rev_vit.rev"), "--set", "depth=0", "-o",
                 str(tmp_path / "m.py")])
    err = capsys.readouterr().err
    assert code == 0 and "warning: segment 'body' has no reversible steps" in err


# ---- 7, 8: names and file names in the output -------------------------------------------------


@pytest.mark.parametrize("name", ["create_model", "ReversibleSegment", "Couple", "PARAMETERS",
                                  "init_weights", "check_input"])
def test_7_model_names_that_collide_with_the_generated_module(
        name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = seg("    a += linear(b, out=8)").replace("model T", f"model {name}")
    code, err = cli(tmp_path, text, capsys=capsys)
    assert code == 1 and "cannot be used as a model name" in err


@pytest.mark.parametrize("label", ["to_empty", "register_forward_hook", "T_destination"])
def test_7_layer_labels_that_collide_with_nn_module(label: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    text = seg(f"    a += linear(b, out=8) as {label}")
    code, err = cli(tmp_path, text, capsys=capsys)
    assert code == 1 and "cannot be used as a layer name" in err


def test_7_value_named_like_a_runtime_function(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    text = seg("    a += linear(b, out=8)").replace("z = concat", "check_input = concat").replace(
        "output z", "output check_input")
    code, err = cli(tmp_path, text, capsys=capsys)
    assert code == 1 and "cannot be used as a value name" in err


def test_7_block_class_avoids_the_model_name() -> None:
    text = seg("    repeat 2 { a += linear(b, out=8)  b += linear(a, out=8) }").replace(
        "model T", "model Block")
    mod = revdsl.load(text)
    assert isinstance(mod.create_model(), mod.Block)


def test_7_nn_module_attribute_list_is_complete() -> None:
    from revdsl.names import MODULE_ATTRIBUTES

    public = {n for n in dir(torch.nn.Module) if not n.startswith("_")}
    assert public <= MODULE_ATTRIBUTES, public - MODULE_ATTRIBUTES


def test_8_file_name_cannot_break_the_output(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / 'we"""ird\nna\\me.rev'
    spec.write_text(seg("    a += linear(b, out=8)"))
    out = tmp_path / "m.py"
    assert main(["compile", str(spec), "-o", str(out)]) == 0
    source = out.read_text()
    compile(source, "m.py", "exec")
    assert '"""ird' not in source


# ---- 9: free input sizes ----------------------------------------------------------------------


def test_9_layer_sized_by_a_free_input_size_is_refused() -> None:
    bad = "model Free\ninput img: [B, 3, S]\nx = linear(img, out=4)\noutput x\n"
    with pytest.raises(revdsl.RevdslError, match="depends on the free input size S"):
        revdsl.load(bad)


def test_9_free_sizes_must_agree_and_be_allowed() -> None:
    free = """model Free
input img: [B, 3, S, S]
x = linear(mean(img, dim=[2, 3]), out=4)
output x
"""
    model = revdsl.load(free).create_model()
    model(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="must have shape"):
        model(torch.randn(1, 3, 16, 24))
    sv = revdsl.load(SPECS / "rev_supervit.rev", sizes=[32, 48], depth=2, prune_at=[1],
                     dim=32, heads=2).create_model()
    sv(torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match="must have shape"):
        sv(torch.randn(1, 3, 16, 64))
    with pytest.raises(ValueError, match="S must be one of 32, 48"):
        sv(torch.randn(1, 3, 40, 40))


# ---- 10, 11: warnings and byte figures --------------------------------------------------------


def test_10_unused_layers_are_warned_once_with_position(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    text = HEAD + """reversible body {
    streams a, b = dup(x)
    repeat i in range(3) { a += linear(b, out=8)  b += linear(a, out=8) as g }
}
y = linear(a, out=3) as head
output y
"""
    code, err = cli(tmp_path, text, capsys=capsys)
    assert code == 0
    assert err.count("warning:") == 1 and "t.rev:7:" in err and "'g'" in err, err
    stem = HEAD + """reversible body {
    streams a, b = dup(x)
    a += linear(b, out=8)
}
y = linear(x, out=3) as head
output y
"""
    code, err = cli(tmp_path, stem, capsys=capsys)
    assert code == 0 and "warning: linear" in err


def test_11_docstring_check_and_viz_agree_on_bytes() -> None:
    from revdsl.pipeline import check_text
    from revdsl.report import describe
    from revdsl.shapes import fmt_bytes

    text = (SPECS / "rev_mvit.rev").read_text()
    report = check_text(text, "rev_mvit.rev")
    source = revdsl.compile_spec(text)
    shown = describe(report)
    for b, size in report.kept_evaluated():
        assert f"  {b.name}: {fmt_bytes(size)}" in source
        assert fmt_bytes(size) in shown


# ---- tracebacks, hangs and unsafe output ------------------------------------------------------


@pytest.mark.parametrize("stmt", [
    "k = foo(i for i in [1])", "k = [1, 2][0.5:]", "k = (-1) ** 0.5",
    "k = [[0]*100000 for i in range(100000)]", "k = 'a' * 3", "k = [1] * -1 + 1",
])
def test_compile_time_errors_are_positioned(stmt: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    start = time.perf_counter()
    code, err = cli(tmp_path, HEAD + stmt + "\noutput x\n", capsys=capsys)
    assert code == 1 and "t.rev:5:" in err and "Traceback" not in err, err
    assert time.perf_counter() - start < 5


def test_deep_nesting_compiles_or_is_positioned(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    terms = " + ".join(["linear(x, out=8)"] * 500)
    code, err = cli(tmp_path, HEAD + f"y = {terms}\noutput y\n", capsys=capsys)
    assert code == 0, err
    ifs = "".join("if true {\n" for _ in range(300)) + "y = x\n" + "}\n" * 300
    code, err = cli(tmp_path, HEAD + ifs + "output y\n", capsys=capsys)
    assert code == 0, err
    deep = "".join("if true {\n" for _ in range(5000)) + "y = x\n" + "}\n" * 5000
    code, err = cli(tmp_path, HEAD + deep + "output y\n", capsys=capsys)
    assert code == 1 and "nest more than" in err


def test_large_spec_compiles_in_reasonable_time(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    lines = [f"v{i} = {i} * 2" for i in range(40000)]
    start = time.perf_counter()
    code, err = cli(tmp_path, HEAD + "\n".join(lines) + "\noutput x\n", capsys=capsys)
    assert code == 0, err
    assert time.perf_counter() - start < 60


def test_output_path_safety(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "t.rev"
    spec.write_text(seg("    a += linear(b, out=8)"))
    assert main(["compile", str(spec), "-o", str(spec)]) == 1
    assert "is the input spec" in capsys.readouterr().err
    assert spec.read_text().startswith("model T")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert main(["compile", str(spec), "-o", str(fifo)]) == 1
    assert "not a regular file" in capsys.readouterr().err
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert main(["compile", str(spec), "-o", str(tmp_path / "no" / "such" / "m.py")]) == 0
    capsys.readouterr()
    blocked = tmp_path / "file"
    blocked.write_text("x")
    assert main(["compile", str(spec), "-o", str(blocked / "m.py")]) == 1
    assert "Traceback" not in capsys.readouterr().err
    old = os.umask(0o022)
    try:
        out = tmp_path / "m.py"
        assert main(["compile", str(spec), "-o", str(out)]) == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
    finally:
        os.umask(old)


def test_check_takes_size(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(SPECS / "rev_supervit.rev"), "--size", "S=160"]) == 0
    out = capsys.readouterr().out
    assert "S = 160" in out and "S=128:" in out and "Min(" not in out


def test_hints_are_right(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # a tensor call is matched against ops, not compile-time functions (softmax, not max)
    code, err = cli(tmp_path, HEAD + "k = sofmax(x)\noutput x\n", capsys=capsys)
    assert code == 1 and "did you mean 'max'" not in err and "did you mean 'softmax'" in err
    code, err = cli(tmp_path, HEAD + "y = linear(im, out=8)\noutput y\n", capsys=capsys)
    assert "did you mean 'img'" in err
    code, err = cli(tmp_path, HEAD + "y = linear(pic, out=8)\noutput y\n", capsys=capsys)
    assert "input pic: [B, ...]" in err
    code, err = cli(tmp_path, seg("    a += linear(c, out=8)"), capsys=capsys)
    assert "add it to the segment's `streams`" in err


def test_python_api_errors_use_python_wording(tmp_path: Path) -> None:
    with pytest.raises(revdsl.RevdslError) as info:
        revdsl.load(SPECS / "rev_vit.rev", dpeth=3)
    assert "--set" not in str(info.value) and "dpeth" in str(info.value)
    binary = tmp_path / "b.rev"
    binary.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(revdsl.RevdslError, match="not UTF-8"):
        revdsl.load(binary)


def test_value_read_across_blocks_is_explained(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    text = seg("""    v = linear(a, out=8)
    a += linear(b, out=8)
    repeat i in range(2) { a += v  b += linear(a, out=8) }""")
    code, err = cli(tmp_path, text, capsys=capsys)
    assert code == 1 and "belongs to the block at line 7" in err, err


def test_value_computed_before_a_block_is_that_blocks_value() -> None:
    text = seg("""    v = linear(a, out=8)
    block { b += v }""")
    assert compare(text).worst < TOL


def test_reading_a_rearranged_stream_says_where_its_value_went(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = seg("""    c, d = chunk(a, 2, dim=-1)
    a = cat(c, d, dim=-1)
    b += linear(c, out=8)""")
    code, err = cli(tmp_path, text, capsys=capsys)
    assert code == 1 and "cat at line 8 moved its value into a" in err, err


@pytest.mark.parametrize("dim", ["-3", "0", "2.5"])
def test_input_dimensions_must_be_positive_integers(dim: str, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    text = f"model T\ninput x: [B, {dim}, 8]\ny = x\noutput y\n"
    code, err = cli(tmp_path, text, capsys=capsys)
    assert code == 1 and "t.rev:2:" in err and "input dimension" in err, err


def test_odd_power_update_is_proved_with_the_real_root() -> None:
    """`a = a ** 3 + f(b)` is a bijection (strictly increasing, onto); its inverse is the real
    cube root (sympy's principal root is complex for negative numbers)."""
    from revdsl.pipeline import check_text

    text = seg("    a = a ** 3 + linear(b, out=8)\n    b += linear(a, out=8)")
    report = check_text(text, "t.rev")
    assert report.ok and "real cube root" in report.steps[0].reason
    model = revdsl.load(text).create_model().double()
    block = model.body.blocks[0]
    a = torch.randn(2, 4, 8, dtype=torch.float64).sign() * (0.5 + torch.rand(2, 4, 8,
                                                                          dtype=torch.float64))
    b = torch.randn(2, 4, 8, dtype=torch.float64)
    back = block.inverse(*block(a, b))
    assert torch.allclose(back[0], a, atol=1e-10) and torch.allclose(back[1], b, atol=1e-12)
    # the compiled module computes the spec (the forward and plain autograd do not invert, so
    # they match the reference to round-off; the reversible gradients go through the cube root)
    d = compare(text)
    assert max(d.output.values()) < TOL and d.params["plain"] < TOL, d
    assert d.params["reversible"] < 1e-5, d
    refused = seg("    a = a ** 2 + linear(b, out=8)\n    b += linear(a, out=8)")
    with pytest.raises(revdsl.RevdslError, match=r"not one-to-one|cannot be undone"):
        revdsl.load(refused)


def test_call_time_option_choices_are_checked_against_the_domain(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = ("model T\noption keep_rate: [0.0, 1.0] = 1.0\ninput x: [B, 9, 16]\n"
            "o, score = attention_cls(layernorm(x), heads=2)\n"
            "k1, k2 = keep_tokens(score, x, o, keep_rate=keep_rate)\noutput k1\n")
    code, err = cli(tmp_path, text, capsys=capsys)
    assert code == 1 and "'keep_rate' must be in (0, 1], got 0" in err, err
