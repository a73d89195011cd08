"""Opening the language: user functions (`def`), expanded at compile time with lexical scoping.

Semantics are checked against the reference evaluator (an independent reading of the spec),
diagnostics by their exact position and words."""

from __future__ import annotations

from pathlib import Path

import pytest

from revdsl.difftest import compare
from revdsl.errors import RevdslError
from revdsl.pipeline import compile_text

HERE = Path(__file__).parent / "language"
TOL = 1e-9

SPECS = sorted(p.stem for p in HERE.glob("*.rev"))


@pytest.mark.parametrize("name", SPECS)
def test_language_specs_equal_the_reference(name: str) -> None:
    d = compare((HERE / f"{name}.rev").read_text(), name=f"{name}.rev")
    assert d.worst < TOL, d


def test_a_function_names_its_layers_and_its_blocks_share_a_class() -> None:
    """A ConvNeXt-like block defined once: its layers are named after it (and after the call
    when a block calls it twice), so the four coupling blocks of a stage share one class."""
    compiled = compile_text((HERE / "functions.rev").read_text(), "functions.rev")
    src = compiled.source
    assert src is not None
    for name in ("convnext_conv", "convnext_norm", "convnext_pointwise_conv1",
                 "convnext_pointwise1_conv1", "convnext1_conv", "convnext1_pointwise_conv2"):
        assert f"self.{name} = " in src, name
    assert "mlp7" not in src and "conv12" not in src
    # one class for every coupling block of both stages (its step functions defined once)
    assert src.count("def f_convnext_pointwise1_conv2(") == 1
    assert src.count("def f_convnext1_pointwise_conv2(") == 1


def test_affine_vit_with_a_softplus_scale_written_as_a_function() -> None:
    text = """model AffineViT
param dim = 16
input img: [B, 3, 16, 16]

def scale(h, eps=0.01) {
    return softplus(linear(layernorm(h), out=dim)) + eps
}

def block_fn(h) {
    return mlp(layernorm(h), ratio=2)
}

x = patch_embed(img, dim=dim, patch=8)
reversible body {
    streams x1, x2 = dup(x)
    repeat 2 {
        x1 = x1 * scale(x2) + block_fn(x2)
        x2 = x2 * scale(x1, eps=0.1) + block_fn(x1)
    }
}
y = mean(concat(x1, x2, dim=-1), dim=1)
output y
"""
    compiled = compile_text(text, "affine.rev")
    assert compiled.report.ok
    assert "softplus" in compiled.source and "self.scale_linear = " in compiled.source
    d = compare(text)
    assert d.worst < TOL, d


def _error(text: str) -> RevdslError:
    with pytest.raises(RevdslError) as info:
        compile_text(text, "f.rev")
    return info.value


BASE = "model M\ninput x: [B, 4, 8]\n"


@pytest.mark.parametrize("body, where, words", [
    ("def f(h) {\n    return f(h)\n}\ny = f(x)\noutput y\n", (4, 12),
     "'f' calls itself (f -> f): functions are expanded at compile time"),
    ("def f(h) {\n    return g(h)\n}\ndef g(h) {\n    return f(h)\n}\ny = f(x)\noutput y\n",
     (7, 12), "'f' calls itself (f -> g -> f)"),
    ("def f(h) {\n    return h + a\n}\nreversible r {\n    streams a, b = dup(x)\n"
     "    b += f(a)\n}\ny = a + b\noutput y\n", (4, 16), "unknown name 'a' in function 'f'"),
    ("def f(h, w) {\n    return linear(h, out=w)\n}\ny = f(x)\noutput y\n", (6, 5),
     "'f' needs argument 'w'"),
    ("def f(h) {\n    return h\n}\ny = f(x, 2)\noutput y\n", (6, 5),
     "'f' takes 1 argument, got 2"),
    ("def f(h) {\n    return h\n}\ny = f(x, k=2)\noutput y\n", (6, 5),
     "'f' has no parameter 'k'"),
    ("def linear(h) {\n    return h\n}\noutput x\n", (3, 5),
     "'linear' is already an op or a built-in function"),
    ("def f(h) {\n    input z: [B, 4]\n    return h\n}\noutput x\n", (4, 5),
     "a inputdecl statement cannot be part of function 'f'"),
    ("def f(h, h) {\n    return h\n}\noutput x\n", (3, 10), "parameter 'h' is given twice"),
    ("reversible r {\n    streams a, b = dup(x)\n    def f(h) {\n        return h\n    }\n"
     "    b += a\n}\noutput a\n", (5, 5), "a function must be defined at the top level"),
])
def test_function_errors_name_the_place(body: str, where: tuple[int, int], words: str) -> None:
    err = _error(BASE + body)
    errors = list(err) if hasattr(err, "errors") else [err]
    assert any(e.span is not None and (e.span.line, e.span.column) == where
               and words in e.message for e in errors), [e.render() for e in errors]


def test_an_error_inside_a_body_names_the_call() -> None:
    """The error points at the line in the body and says which call reached it."""
    text = BASE + ("def f(h, w) {\n    u = linear(h, out=w)\n    return u * linear(h, out=3)\n"
                   "}\ny = f(x, 8)\noutput y\n")
    err = _error(text)
    rendered = err.render()
    assert rendered.startswith("f.rev:5:12: error:"), rendered
    assert "in function 'f' (line 3), called at line 7" in rendered, rendered


def test_a_function_inside_a_coupling_is_verified_as_expanded() -> None:
    """The verifier reasons about the expanded program: a function that reads the stream it
    updates is refused at the line in the body, with the call named."""
    text = BASE + ("def f(h, g) {\n    return mlp(h) + mlp(g)\n}\nreversible r {\n"
                   "    streams a, b = dup(x)\n    b += f(a, b)\n}\ny = a + b\noutput y\n")
    from revdsl.pipeline import check_text

    errors = check_text(text, "f.rev").errors
    assert len(errors) == 1, [e.render() for e in errors]
    rendered = errors[0].render()
    assert rendered.startswith("f.rev:4:21: error: b is updated by a function that reads b"), \
        rendered
    assert "in function 'f' (line 3), expanded at its call on line 8" in rendered, rendered


def test_an_extern_module_is_imported_and_keeps_its_initialisation() -> None:
    import revdsl

    text = (HERE / "extern.rev").read_text()
    compiled = compile_text(text, "extern.rev")
    src = compiled.source
    assert "import tests.language.ext_modules" in src
    assert "self.gated1 = tests.language.ext_modules.GatedMlp(dim=8, hidden=16)" in src
    model = revdsl.load(text).create_model()
    # revdsl's ViT initialisation (std 0.02) stays out of the user's module (std 0.3 there)
    std = model.body.blocks[0].gated1.out.weight.std().item()
    assert 0.2 < std < 0.4, std
    assert compiled.report.ok and len(compiled.report.steps) == 4


EXT = BASE + 'extern g "tests.language.ext_modules.GatedMlp" : [B, N, C] -> [B, N, C]\n'


@pytest.mark.parametrize("text, where, words", [
    (BASE + 'extern g "not a path" : [B, N] -> [B, N]\noutput x\n', (3, 10),
     "'not a path' is not an import path"),
    (BASE + 'extern g "a.B" : [B, N] -> [B, M]\noutput x\n', (3, 32),
     "the output dimension M of 'g' does not appear in its inputs"),
    (EXT + "y = g(x, x)\noutput y\n", (4, 5), "'g' takes 1 tensor"),
    (EXT + "y = g(x, dim=x)\noutput y\n", (4, 5), "argument 'dim' of extern 'g' must be"),
    (BASE.replace("[B, 4, 8]", "[B, 4]") + 'extern g "a.B" : [B, N, C] -> [B, N, C]\n'
     "y = g(x)\noutput y\n", (4, 5), "'g' input 1: declared [B, N, C], got [B, 4]"),
    (BASE + 'extern linear "a.B" : [B, N] -> [B, N]\noutput x\n', (3, 1),
     "'linear' is already an op"),
])
def test_extern_errors_name_the_place(text: str, where: tuple[int, int], words: str) -> None:
    err = _error(text)
    errors = list(err) if hasattr(err, "errors") else [err]
    assert any(e.span is not None and (e.span.line, e.span.column) == where
               and words in e.message for e in errors), [e.render() for e in errors]


def test_several_outputs_come_back_as_a_tuple_in_order() -> None:
    import torch

    import revdsl

    model = revdsl.load((HERE / "outputs.rev").read_text()).create_model()
    logits, feats, b = model(torch.randn(2, 4, 8))
    assert logits.shape == (2, 3) and feats.shape == (2, 4, 16) and b.shape == (2, 4, 8)
    err = _error(BASE + "output x, y\n")
    assert "unknown name 'y'" in err.message


def test_one_name_twice_is_one_layer() -> None:
    """Tied weights: the generated model holds the layer once (its parameters counted once by
    stats), both calls use it, and two different layers under one name are refused."""
    import revdsl
    from revdsl.pipeline import check_text
    from revdsl.stats import stats

    text = (HERE / "tied.rev").read_text()
    src = compile_text(text, "tied.rev").source
    assert src.count("self.proj = nn.Linear(8, 8)") == 1
    assert src.count("self.ffn = Mlp(8, hidden=32)") == 1  # one class, one ffn per block
    model = revdsl.load(text).create_model()
    n = sum(p.numel() for p in model.parameters())
    assert stats(check_text(text, "tied.rev")).params == n == 72 + 2 * (32 + 552)
    err = _error(BASE + "y = linear(x, out=8) as proj\nz = linear(y, out=4) as proj\n"
                 "output z\n")
    assert err.span is not None and (err.span.line, err.span.column) == (4, 5), err.render()
    assert "two different layers are named 'proj' in one model" in err.message, err.message


def test_the_language_reference_is_current() -> None:
    """docs/language.md's op section is what the catalogue says now (`revdsl ops --markdown`),
    and every op and construct keyword appears in it."""
    from revdsl import catalogue
    from revdsl.docs import BEGIN, END, ops_markdown

    text = (Path(__file__).parent.parent / "docs" / "language.md").read_text()
    section = text[text.index(BEGIN):text.index(END) + len(END)] + "\n"
    assert section == ops_markdown(), "run: revdsl ops --markdown, and paste it into the doc"
    for name in catalogue.names():
        assert f"| `{name}` |" in text, name
    for keyword in ("model", "param", "arg", "option", "input", "output", "extern", "def",
                    "reversible", "streams", "stream", "block", "repeat", "silo", "phase",
                    "head", "for", "if", "as"):
        assert f"`{keyword}" in text, keyword


def test_model_arguments_and_options_in_tensor_arithmetic() -> None:
    """A gain fixed when the model is built and a temperature chosen per call: the generated
    model reads them when it runs (equal to the reference at other values than the defaults);
    inside a reversible segment such a number is refused with the reason."""
    text = (HERE / "runtime_numbers.rev").read_text()
    src = compile_text(text, "runtime_numbers.rev").source
    assert "* (self.gain)" in src and "/ temperature" in src
    for kw in ({"temperature": 2.0}, {"args": {"gain": 3.0}}):
        d = compare(text, **kw)  # type: ignore[arg-type]
        assert d.worst < TOL, (kw, d)
    err = _error(BASE.replace("model M\n", "model M\narg gain = 0.5\n")
                 + "reversible r {\n    streams a, b = dup(x)\n    a += mlp(b) * gain\n}\n"
                 "output a\n")
    assert "not inside a reversible segment" in err.message and err.span.line == 6


@pytest.mark.parametrize("name", SPECS)
def test_language_specs_pass_revdsl_test(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`revdsl test` (inverse of every block, reversible vs plain gradients, at random sizes,
    inputs and parameters) passes on each of them."""
    from revdsl.cli import main

    assert main(["test", str(HERE / f"{name}.rev"), "--examples", "3", "-q"]) == 0, \
        capsys.readouterr()


def test_a_bijective_layer_that_cannot_be_undone_in_floating_point_says_so() -> None:
    """An invertible 1x1 convolution whose determinant vanished in float32: the backward
    reports the step instead of returning non-finite gradients."""
    import torch

    import revdsl

    model = revdsl.load((HERE / "glow.rev").read_text()).create_model()
    with torch.no_grad():
        model.flow.blocks[0].invconv.log_s.fill_(-200.0)
    with pytest.raises(FloatingPointError, match="the update of 'x' by invconv"):
        model(torch.randn(2, 4, 8, 8)).sum().backward()
