"""Robustness: random text and random mutations of the example specs never raise anything but
revdsl's own error, with a source position (at least 10,000 examples per run).

Random strings go through the parser (and the rest of the pipeline when they parse); mutations of
every spec in specs/ and tests/verifier/ (deleted, inserted or replaced tokens, duplicated or
dropped lines, changed numbers) go through the whole pipeline, and when they still verify, through
code generation and the cost model too."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from revdsl import sizes as sizes_mod
from revdsl.codegen.generate import generate
from revdsl.errors import RevdslError
from revdsl.parse import parse
from revdsl.pipeline import check_text
from revdsl.stats import stats
from tests.conftest import ROOT

SOURCES = sorted((ROOT / "specs").glob("*.rev")) + sorted(
    (ROOT / "tests" / "verifier").glob("*/*.rev"))
TEXTS = [p.read_text() for p in SOURCES]
TOKENS = [
    "(", ")", "[", "]", "{", "}", ",", "=", "+=", "-=", "*=", "*", "**", "/", "//", "%", ":",
    ".", "\n", " ", "#", "model", "param", "arg", "option", "input", "output", "reversible",
    "streams", "stream", "block", "silo", "phase", "head", "for", "in", "range", "repeat", "if",
    "else", "true", "false", "B", "x", "s[0]", "dup", "linear", "attention", "mlp", "layernorm",
    "0", "1", "-1", "2.5", "1e400", "99999999999999999999", '"a"', "'", '"', "\\", "\t", "\x00",
    "é", "lambda", "__class__", "as", "and", "or", "not", "==", "<", "import os", "self",
]
COUNT: Counter[str] = Counter()
FUZZ = settings(deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _run_all(text: str) -> None:
    """The whole pipeline; the only acceptable failure is a positioned RevdslError."""
    try:
        report = check_text(text, "fuzz.rev")
        if report.ok:
            generate(report.program, report)
            stats(report, sizes_mod.first(sizes_mod.resolve(report.program)))
    except RevdslError as exc:
        _positioned(exc)


def _positioned(exc: RevdslError) -> None:
    if exc.span is None and "--size" not in exc.message:
        raise AssertionError(f"error without a position: {exc.render()}")
    text = exc.render()
    assert "error:" in text


def _parses(text: str) -> bool:
    """Parse `text`; a refusal must be revdsl's positioned error. Whether it parsed."""
    try:
        parse(text, "fuzz.rev")
    except RevdslError as exc:
        _positioned(exc)
        return False
    return True


@settings(FUZZ, max_examples=4000)
@given(st.lists(st.one_of(st.sampled_from(TOKENS), st.text(max_size=4)), max_size=40))
def test_random_text(parts: list[str]) -> None:
    COUNT["random"] += 1
    text = " ".join(parts)
    if _parses(text):
        _run_all(text)


MUTATION = st.tuples(st.integers(0, 5), st.floats(0, 1), st.integers(0, 12),
                     st.sampled_from(TOKENS), st.sampled_from(["0", "7", "-3", "100000", "0.5"]))


def _mutate(text: str, ops: list[tuple[int, float, int, str, str]]) -> str:
    for kind, where, length, token, number in ops:
        i = int(where * len(text))
        j = min(len(text), i + length)
        lines = text.split("\n")
        k = int(where * (len(lines) - 1))
        if kind == 0:
            text = text[:i] + text[j:]
        elif kind == 1:
            text = text[:i] + token + text[i:]
        elif kind == 2:
            text = text[:i] + token + text[j:]
        elif kind == 3:
            lines.insert(int(length / 12 * len(lines)), lines[k])
            text = "\n".join(lines)
        elif kind == 4:
            del lines[k]
            text = "\n".join(lines)
        else:
            digits = [m for m in range(i, len(text)) if text[m].isdigit()]
            if digits:
                text = text[:digits[0]] + number + text[digits[0] + 1:]
    return text


@settings(FUZZ, max_examples=6500)
@given(st.integers(0, len(TEXTS) - 1), st.lists(MUTATION, min_size=1, max_size=4))
def test_mutated_specs(index: int, ops: list[tuple[int, float, int, str, str]]) -> None:
    COUNT["mutated"] += 1
    text = _mutate(TEXTS[index], ops)
    # the big specs: parse only (their pipeline is slow to repeat)
    if _parses(text) and len(text) <= 2000:
        _run_all(text)


def test_fuzz_ran_enough_examples() -> None:
    assert len(SOURCES) >= 60
    assert COUNT["random"] + COUNT["mutated"] >= 10_000, COUNT
    print(f"\nfuzz examples: {dict(COUNT)}")


def test_known_hazards_are_errors_not_hangs(tmp_path: Path) -> None:
    base = "model T\ninput x: [B, 4, 8]\nreversible r {\n    streams a, b = dup(x)\n"
    cases = {
        "    repeat 10000000 {\n        a += mlp(b)\n    }\n}\noutput a\n": "unrolls to more",
        "    a += mlp(b)\n}\noutput a\na = a\n": "`output` must be the last statement",
        "    a += attention(b, heads=0)\n}\noutput a\n": "'heads' must be at least 1",
        "    a += mlp(b) * 1e400\n}\noutput a\n": "not a finite number",
        "    a += linear(b, out=2 ** 1000)\n}\noutput a\n": "too large",
        "    c, d = dup(a, 100000000)\n}\noutput a\n": "too large",
    }
    for body, phrase in cases.items():
        try:
            check_text(base + body, "hazard.rev")
        except RevdslError as exc:
            assert phrase in exc.message, (body, exc.render())
            assert exc.span is not None
        else:
            raise AssertionError(f"no error for {body!r}")


SMALL_TEXTS = [t for t in TEXTS if len(t) <= 2000]


@settings(FUZZ, max_examples=300)
@given(st.integers(0, len(SMALL_TEXTS) - 1), st.lists(MUTATION, min_size=1, max_size=3),
       st.booleans())
def test_accepted_mutations_build_and_train(index: int,
                                            ops: list[tuple[int, float, int, str, str]],
                                            through_cli: bool) -> None:
    """No exit-0 broken module: every mutated spec the compiler accepts (through the API or the
    CLI) gives a module that loads, builds, and runs one training step in both modes."""
    import tempfile

    from revdsl.cli import main
    from revdsl.loader import load_source
    from revdsl.pipeline import compile_text
    from revdsl.testing import random_inputs

    text = _mutate(SMALL_TEXTS[index], ops)
    COUNT["built"] += 1
    try:
        compiled = compile_text(text, "fuzz.rev")
    except RevdslError as exc:
        _positioned(exc)
        return
    try:
        sizes = sizes_mod.first(sizes_mod.resolve(compiled.program))
    except RevdslError:
        return  # a free size without a value: `--size` is the user's to give
    if stats(compiled.report, sizes).params > 2_000_000:
        return  # a mutated number built a huge layer: too slow to build here, not wrong
    source = compiled.source
    if through_cli:
        with tempfile.TemporaryDirectory() as tmp:
            spec, out = Path(tmp) / "fuzz.rev", Path(tmp) / "m.py"
            spec.write_text(text)
            assert main(["compile", str(spec), "-o", str(out), "-q"]) == 0
            source = out.read_text()
    assert source is not None
    model = load_source(source).create_model().double()
    xs = [x.requires_grad_() for x in
          random_inputs(compiled.program, batch=2, sizes=sizes, default=8)]
    for mode in (True, False):
        model.reversible = mode
        model.zero_grad(set_to_none=True)
        out = model(*xs)
        outs = out if isinstance(out, tuple) else (out,)
        sum(o.double().square().mean() for o in outs).backward()  # any exception fails
