"""The user-facing tools around the graph: `revdsl viz` pictures and `revdsl stats` predictions
(checked against the bytes autograd actually saves)."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings

from revdsl.cli import main
from revdsl.errors import RevdslError
from revdsl.measure import stats_against_saved
from revdsl.testing import RandomSpec, any_specs
from tests.conftest import ROOT, SPECS

VERIFIER = Path(__file__).resolve().parent / "verifier"

# small configurations of every spec (the real sizes are in benchmarks/)
SMALL = {
    "rev_vit.rev": dict(dim=32, heads=2, depth=4, image=32, patch=8),
    "rev_mvit.rev": dict(image=32, dim=8, kv_stride=2, transitions=[1, 3], depth=6),
    "rev_vir.rev": dict(dim=32, heads=4, depth=3, image=32, patch=8, chunk=5),
    "rev_supervit.rev": dict(dim=32, heads=2, depth=6, prune_at=[2, 4], sizes=[16, 24, 32],
                             patch=8),
    "rev_bifpn.rev": dict(image=64, num_ext=1, reps=1),
    "rev_swin.rev": dict(image=56, embed=16, depths=[2, 2], heads=[2, 4]),
    "rev_net.rev": dict(image=16, units=[2, 2, 2], widths=[8, 8, 16, 24]),
}

# texts each picture must show (node labels, cluster labels)
EXPECTED_TEXT = {
    "rev_vit.rev": ["x1 <- x1 + f", "f = drop_path(attention(layernorm(x2)))", "block × 12",
                    "reversible segment body: 12 blocks", "stem (stored)", "head (stored)"],
    "rev_mvit.rev": ["x1 <- x1 + f", "pool_attention", "reversible segment stage0",
                     "(stored, recomputed in the backward)"],
    "rev_vir.rev": ["retention", "block × 12", "x2 <- x2 + f"],
    "rev_supervit.rev": ["keep_tokens", "attention_cls", "block prune"],
    "rev_bifpn.rev": ["silo", "phase up", "phase down", "new stream s1 = f", "block neck"],
    "rev_swin.rev": ["window_attention", "reversible segment stage0: 2 blocks",
                     "(stored, recomputed in the backward)"],
    "rev_net.rev": ["block down0 (stored, recomputed in the backward)",
                    "reversible segment stage0: 3 blocks"],
}


def _texts(svg: str) -> set[str]:
    return {html.unescape(t) for t in re.findall(r"<text[^>]*>([^<]*)</text>", svg)}


@pytest.mark.parametrize("spec", sorted(SMALL))
def test_viz_svg_and_png(spec: str, tmp_path: Path) -> None:
    svg, png = tmp_path / "g.svg", tmp_path / "g.png"
    assert main(["viz", str(SPECS / spec), "-o", str(svg)]) == 0
    assert main(["viz", str(SPECS / spec), "-o", str(png)]) == 0
    texts = _texts(svg.read_text())
    joined = "\n".join(texts)
    for expected in EXPECTED_TEXT[spec]:
        assert expected in joined, (expected, sorted(texts))
    assert "legend" in texts and "refuted step" in texts
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


ALL_SPECS = sorted(SPECS.glob("*.rev")) + sorted((ROOT / "tests").rglob("*.rev"))


def test_viz_renders_every_spec_as_svg_and_png(tmp_path: Path) -> None:
    """Every spec in specs/ and tests/ (invalid ones draw their problem in red) renders in both
    formats: a non-trivial SVG with the legend, and a PNG."""
    from revdsl.pipeline import check_text
    from revdsl.viz import render

    for path in ALL_SPECS:
        try:
            report = check_text(path.read_text(), str(path))
        except RevdslError:
            continue  # fails before verification (a parse or name error): nothing to draw
        svg, png = tmp_path / f"{path.stem}.svg", tmp_path / f"{path.stem}.png"
        render(report, svg)
        render(report, png)
        texts = _texts(svg.read_text())
        assert "legend" in texts and "a value read again later" in texts, path
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_viz_draws_skips_and_lists_readably(tmp_path: Path) -> None:
    """A U-Net's skips are long edges from the segment that computed them to the statement that
    reads them, labelled with the value; list building reads as a list."""
    out = tmp_path / "unet.svg"
    assert main(["viz", str(ROOT / "tests" / "viz" / "unet_like.rev"), "-o", str(out)]) == 0
    svg = out.read_text()
    texts = _texts(svg)
    assert "skips = [skips[0], x]" in texts and "skips = [x]" in texts, sorted(texts)
    assert not any("skips0" in t for t in texts), sorted(texts)
    assert {"skips[0]", "skips[1]"} <= texts  # the skip edges' labels
    edges = re.findall(r'<g id="edge\d+" class="edge">(.*?)</g>', svg, re.S)
    skips = [e for e in edges if 'stroke="#d2691e"' in e and "skips[" in e]
    assert len(skips) == 2, len(skips)


def _near(colours: list[tuple[int, tuple[int, int, int]]], rgb: tuple[int, int, int]) -> int:
    """How many pixels have about the colour `rgb`."""
    return sum(n for n, c in colours if sum(abs(a - b) for a, b in zip(c, rgb, strict=True)) < 12)


def test_viz_svg_is_not_blank_in_a_browser(tmp_path: Path) -> None:
    """The SVG opens in a real browser: headless Chromium renders it, and the screenshot has the
    picture's colours (the segment's green, the stored parts' orange), not a blank page."""
    from PIL import Image

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "Chromium is needed for this test: scripts/setup.sh installs it " \
        "(apt-get install chromium)"
    for spec in ("rev_vit.rev", "rev_bifpn.rev"):
        svg, shot = tmp_path / f"{spec}.svg", tmp_path / f"{spec}.png"
        assert main(["viz", str(SPECS / spec), "-o", str(svg)]) == 0
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1000,1400",
                        svg.as_uri()], check=True, capture_output=True, timeout=120)
        colours = Image.open(shot).convert("RGB").getcolors(maxcolors=1 << 24)
        assert colours is not None and len(colours) > 50, spec


        assert _near(colours, (0xE3, 0xF4, 0xE8)) > 1000, spec  # the reversible segment's fill
        assert _near(colours, (0xFD, 0xEB, 0xD3)) > 1000, spec  # the stored parts' fill


def test_viz_expand_draws_every_block(tmp_path: Path) -> None:
    out = tmp_path / "g.svg"
    spec = str(SPECS / "rev_vit.rev")
    assert main(["viz", spec, "--set", "depth=3", "--expand", "-o", str(out)]) == 0
    texts = _texts(out.read_text())
    assert sum(t == "x1 <- x1 + f" for t in texts) == 1  # set of texts: one label ...
    assert out.read_text().count("x1 &lt;&#45; x1 + f") == 3  # ... drawn three times
    assert not any("× 3" in t for t in texts)


def test_viz_of_an_invalid_spec_draws_the_problem(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "bad.svg"
    spec = VERIFIER / "invalid" / "relu_of_target.rev"
    assert main(["viz", str(spec), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "relu_of_target.rev:6:5: error: the update of a cannot be undone" in err
    assert "drawn in red" in err
    svg = out.read_text()
    assert "#c0392b" in svg  # the refuted step's colour
    assert any("not one-to-one" in t for t in _texts(svg))


def test_viz_dot_needs_no_dot_program(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    import revdsl.viz

    monkeypatch.setattr(revdsl.viz.shutil, "which", lambda name: None)
    out = tmp_path / "g.dot"
    assert main(["viz", str(SPECS / "rev_vit.rev"), "-o", str(out)]) == 0
    assert out.read_text().startswith("digraph")
    assert main(["viz", str(SPECS / "rev_vit.rev"), "-o", str(tmp_path / "g.svg")]) == 1
    assert "`dot` program is not installed" in capsys.readouterr().err
    assert not (tmp_path / "g.svg").exists()
    assert main(["viz", str(SPECS / "rev_vit.rev"), "-o", str(tmp_path / "g.jpg")]) == 1


@pytest.mark.parametrize("spec", sorted(SMALL))
def test_stats_predicts_saved_bytes_within_10_percent(spec: str) -> None:
    found = stats_against_saved((SPECS / spec).read_text(), spec, SMALL[spec])
    for mode, (want, got) in found.items():
        assert abs(want / got - 1) < 0.10, (spec, mode, want, got, want / got)
    # and the prediction shows the point of the exercise
    assert found["reversible"][0] < found["baseline"][0]


# every accepted spec under tests/, but those with extern modules (their insides are the user's:
# `revdsl stats` says it does not count them)
TEST_SPECS = sorted(p for p in (ROOT / "tests").rglob("*.rev")
                    if "invalid" not in p.parts and "extern " not in p.read_text())


def _within(found: dict[str, tuple[int, float]], what: str, tol: float = 0.10) -> None:
    for mode, (want, got) in found.items():
        if got == 0:  # nothing tracked by autograd (a program without parameters)
            assert want == 0, (what, mode, want, got)
            continue
        assert abs(want / got - 1) < tol, (what, mode, want, got, want / got)


@pytest.mark.parametrize("path", TEST_SPECS, ids=lambda p: str(p.relative_to(ROOT / "tests")))
def test_stats_predicts_saved_bytes_for_every_test_spec(path: Path) -> None:
    """Not only the shipped five: every accepted spec under tests/ (affine and monotone scales,
    permutations, silos, a conv net with BatchNorm, pooling and stored transitions)."""
    sizes = {"H": 16, "W": 16} if path.name == "symbolic_sizes.rev" else None
    _within(stats_against_saved(path.read_text(), path.name, sizes=sizes), path.name)


@settings(max_examples=100, deadline=None)
@given(any_specs(invalid=False))
def test_stats_predicts_saved_bytes_for_random_programs(spec: RandomSpec) -> None:
    _within(stats_against_saved(spec.text, "random.rev"), spec.text)


def test_stats_json_and_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys, json, io, contextlib\n"
        "from revdsl.cli import main\n"
        "buf = io.StringIO()\n"
        "with contextlib.redirect_stdout(buf):\n"
        "    rc = main(['stats', sys.argv[1], '--json', '--batch', '4'])\n"
        "assert rc == 0, rc\n"
        "assert 'torch' not in sys.modules, 'stats imported torch'\n"
        "print(buf.getvalue())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(SPECS / "rev_supervit.rev")],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    data = json.loads(proc.stdout)
    assert data["params"] == 22_554_856 and data["batch"] == 4
    assert data["sizes"] == {"S": 224}
    parts = {p["name"]: p for p in data["parts"]}
    assert {"stem", "stage0", "prune0", "head"} <= set(parts)
    assert data["stored_bytes_per_sample"]["reversible"] == sum(
        p["stored_bytes_per_sample"]["reversible"] for p in data["parts"])


def test_stats_free_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    spec = str(SPECS / "rev_supervit.rev")
    assert main(["stats", spec, "--size", "S=160"]) == 0
    out = capsys.readouterr().out
    assert "2.269 GMACs" in out and "input size S = 160 (allowed: 128, 160, 192, 224)" in out
    assert main(["stats", spec, "--size", "S=161"]) == 1
    err = capsys.readouterr().err
    assert "--size S=161: the spec accepts S in 128, 160, 192, 224" in err
    assert main(["stats", str(VERIFIER / "valid" / "symbolic_sizes.rev")]) == 1
    err = capsys.readouterr().err
    assert "the input dimension H is free" in err and "--size H=N" in err
    assert main(["stats", spec, "--size", "S"]) == 1
    assert "--size expects NAME=N" in capsys.readouterr().err


def test_bench_isolates_modes_repeats_and_reports_every_sample(
        capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from revdsl.cli import main

    sets = ["--set", "depth=1", "--set", "dim=16", "--set", "heads=2", "--set", "image=16",
            "--set", "patch=8"]
    code = main(["bench", "specs/rev_vit.rev", *sets, "--batch", "2", "--steps", "2",
                 "--warmup", "0", "--repeats", "2", "--threads", "1", "--json",
                 "--modes", "reversible", "baseline"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and [r["mode"] for r in out] == ["reversible", "baseline"]
    for r in out:
        assert len(r["samples"]) == 4  # 2 repeats x 2 steps, each repeat a fresh process
        assert min(r["samples"]) <= r["step_time"] <= max(r["samples"])


def test_bench_warns_on_spread() -> None:
    from revdsl.bench import Result, format_results, spread_warnings

    r = Result(spec="s", mode="baseline", batch=2, step_time=1.0, saved=1, peak=1,
               samples=[0.9, 1.0, 1.3])
    assert any("spread 44%" in w for w in spread_warnings([r]))
    assert "0.900 / 1.000 / 1.300" in format_results([r])
