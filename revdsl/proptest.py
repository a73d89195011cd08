"""`revdsl test SPEC [--examples N]`: property-test a compiled spec on random inputs and weights.

For each example hypothesis draws a batch size, the free input sizes (among those the spec
allows), an input seed and scale, a parameter seed and gain, and a choice for every call-time
option. The compiled model gets random parameters and runs one training step in reversible mode
and one under plain autograd (same dropout masks), and the checks are:

* rebuilt: in every reversible segment, the block inputs the backward rebuilds with the proved
  inverse equal the ones the forward saw (for the first block this is the whole segment's
  inverse(forward(x)) against x);
* gradients: the reversible backward's output, parameter and input gradients equal plain
  autograd's;
* forms: for an option that only picks between forms of one function (ViR's mode), every choice
  gives the same output.

Errors are relative (`revdsl.testing.rel_err`); a non-finite value fails. On a failure hypothesis
shrinks the example, and the minimal failing one is printed with the check that failed; the
exit status is then 1.
"""

from __future__ import annotations

import argparse
import math
import shlex
import sys
import time
from dataclasses import dataclass, field
from typing import Any

DEFAULT_TOL = {"float64": 1e-8, "float32": 1e-4}


@dataclass
class Example:
    """One drawn example (everything needed to repeat it)."""

    inputs: Any  # revdsl.testing.Inputs
    param_seed: int
    gain: float
    options: dict[str, Any]

    def describe(self) -> str:
        parts = [f"batch={self.inputs.batch}"]
        parts += [f"{k}={v}" for k, v in self.inputs.sizes.items()]
        parts += [f"input_seed={self.inputs.seed}", f"input_scale={self.inputs.scale:g}",
                  f"param_seed={self.param_seed}", f"param_gain={self.gain:g}"]
        parts += [f"{k}={v!r}" for k, v in self.options.items()]
        return " ".join(parts)

    def replay_args(self) -> str:
        sizes = "".join(f" --size {k}={v}" for k, v in self.inputs.sizes.items())
        return (f"--batch {self.inputs.batch} --input-seed {self.inputs.seed} "
                f"--input-scale {self.inputs.scale:g} --param-seed {self.param_seed} "
                f"--param-gain {self.gain:g}{sizes}")


class PropertyFailure(Exception):
    def __init__(self, check: str, error: float, tol: float, example: Example,
                 tensor: str = "") -> None:
        super().__init__(f"{check}: error {error:.3g} > {tol:g}")
        self.check, self.error, self.tol, self.example = check, error, tol, example
        self.tensor = tensor  # the parameter whose gradient failed, when one did


@dataclass
class Outcome:
    examples: int = 0
    worst: dict[str, tuple[float, str]] = field(default_factory=dict)
    failure: PropertyFailure | None = None
    shrink_steps: int = 0
    seconds: float = 0.0
    overflows: int = 0  # examples skipped: plain autograd itself was not finite
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.failure is None


def property_test(model: Any, program: Any, examples: int = 10, tol: float | None = None,
                  seed: int = 0, max_batch: int = 2, sizes: dict[str, int] | None = None,
                  progress: bool = False, replay: dict[str, Any] | None = None) -> Outcome:
    """Property-test a model built from `program` (its dtype decides the default tolerance);
    the model's parameters are replaced by random ones (restored afterwards). `replay` (batch,
    input_seed, input_scale, param_seed, param_gain) runs exactly that one example instead.
    Examples where plain autograd itself overflows are skipped and counted, not failed."""
    import hypothesis
    import torch
    from hypothesis import HealthCheck, Verbosity, given, settings
    from hypothesis import strategies as st

    from revdsl import sizes as sizes_mod
    from revdsl.testing import (
        Overflow,
        form_errors,
        form_options,
        gradient_errors,
        inputs_for,
        model_dtype,
        randomize_parameters,
        replay_inputs,
    )

    dtype = model_dtype(model)
    tol = tol if tol is not None else DEFAULT_TOL["float64" if dtype == torch.float64
                                                  else "float32"]
    allowed = sizes_mod.resolve(program, sizes, every=True)
    forms = form_options(program)
    option_choices = {
        o.name: (o.default, *[c for c in o.choices if c != o.default]) for o in program.options
    }  # the default first: shrinking goes towards it
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    outcome = Outcome()
    started = time.perf_counter()

    strategy = st.builds(
        Example,
        inputs=inputs_for(program, max_batch=max_batch, dtype=dtype, sizes=allowed),
        param_seed=st.integers(0, 2**16),
        gain=st.sampled_from([1.0, 0.5, 2.0]),
        options=st.fixed_dictionaries({k: st.sampled_from(v) for k, v in
                                       option_choices.items()}),
    )

    def check_example(ex: Example) -> None:
        model.load_state_dict(saved)
        randomize_parameters(model, ex.param_seed, ex.gain)
        where: dict[str, str] = {}
        try:
            errs = gradient_errors(model, ex.inputs.tensors, seed=ex.param_seed,
                                   program=program, where=where, **ex.options)
        except Overflow:
            outcome.overflows += 1
            raise
        except FloatingPointError as exc:
            outcome.notes.append(str(exc))
            record("reversible backward: finite reconstruction", math.inf, ex)
            return
        for key, value in errs.items():
            if key.startswith("rebuilt:"):
                record(f"segment {key[8:]}: inverse(forward(x)) vs x", value, ex)
        record("reversible vs plain autograd: output", errs["output"], ex)
        record("reversible vs plain autograd: parameter gradients", errs["params"], ex,
               where.get("params", ""))
        record("reversible vs plain autograd: input gradients", errs["input"], ex)
        for opt in forms:
            others = {k: v for k, v in ex.options.items() if k != opt.name}
            for choice, e in form_errors(model, ex.inputs.tensors, opt, **others).items():
                record(f"forms agree: {opt.name}={choice!r} vs {opt.default!r}", e, ex)

    def record(check: str, error: float, ex: Example, tensor: str = "") -> None:
        prior = outcome.worst.get(check)
        if prior is None or not error <= prior[0]:
            outcome.worst[check] = (error, ex.describe())
        if not error <= tol:  # NaN fails too
            failure = PropertyFailure(check, error, tol, ex, tensor)
            outcome.failure = outcome.failure or failure
            raise failure

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              verbosity=Verbosity.quiet, report_multiple_bugs=False,
              suppress_health_check=list(HealthCheck))
    @hypothesis.seed(seed)
    @given(strategy)
    def run(ex: Example) -> None:
        if outcome.failure is None:
            outcome.examples += 1
        else:
            outcome.shrink_steps += 1
        if progress:
            _progress(outcome.examples, examples, ex)
        try:
            check_example(ex)
        except Overflow:
            if outcome.failure is None:
                outcome.examples -= 1  # counted as skipped instead
            hypothesis.reject()

    try:
        if replay is not None:
            ex = Example(inputs=replay_inputs(program, replay, dtype, allowed),
                         param_seed=replay.get("param_seed", 0),
                         gain=replay.get("param_gain", 1.0),
                         options={k: v[0] for k, v in option_choices.items()})
            outcome.examples = 1
            try:
                check_example(ex)
            except Overflow:
                pass
        else:
            run()
    except PropertyFailure as exc:
        outcome.failure = exc
    except hypothesis.errors.Unsatisfiable:
        pass
    finally:
        model.load_state_dict(saved)
        if progress:
            sys.stderr.write("\n")
        outcome.seconds = time.perf_counter() - started
    return outcome


def _progress(done: int, total: int, ex: Example) -> None:
    width = 20
    filled = min(width, int(width * done / max(total, 1)))
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] example {done}: "
                     f"{ex.describe()[:70]:<70}")
    sys.stderr.flush()


def format_outcome(name: str, outcome: Outcome, tol: float, dtype: str, spec: str = "SPEC"
                   ) -> str:
    shrunk = (f", failed at example {outcome.examples} and shrunk in {outcome.shrink_steps} "
              "steps" if outcome.failure is not None else "")
    lines = [f"{name}: {outcome.examples} examples ({dtype}, tolerance {tol:g}, "
             f"{outcome.seconds:.1f} s{shrunk})"]
    width = max((len(k) for k in outcome.worst), default=10)
    lines.append(f"  {'check'.ljust(width)}  worst error")
    for check, (err, _) in outcome.worst.items():
        mark = "" if err <= tol else "  FAILED"
        shown = f"{err:.2e}" if math.isfinite(err) else str(err)
        lines.append(f"  {check.ljust(width)}  {shown}{mark}")
    if outcome.overflows:
        lines.append(f"skipped {outcome.overflows} example(s) where plain autograd itself "
                     "overflowed (random weights: not an invertibility failure)")
    if outcome.failure is None:
        lines.append("all checks passed" if outcome.examples else
                     "no example could be checked (every one overflowed)")
    else:
        f = outcome.failure
        tensor = f" (worst tensor: {f.tensor})" if f.tensor else ""
        lines.append(f"FAILED: {f.check}: error {f.error:.3g} > tolerance {f.tol:g}{tensor}")
        lines.extend(f"  {n}" for n in outcome.notes[-1:])
        lines.append(f"minimal failing example: {f.example.describe()}")
        dt = f" --dtype {dtype}" if dtype != "float64" else ""
        lines.append(f"replay it: revdsl test {spec}{dt} {f.example.replay_args()}")
    return "\n".join(lines)


def cmd_test(args: argparse.Namespace) -> int:
    import torch

    from revdsl.files import UsageError, parse_sets, read_spec
    from revdsl.loader import load_source
    from revdsl.pipeline import compile_text
    from revdsl.sizes import parse_size_args

    if args.examples < 1:
        raise UsageError("--examples must be at least 1")
    compiled = compile_text(read_spec(args.spec), args.spec, parse_sets(args.set))
    module = load_source(compiled.source)
    dtype = {"float64": torch.float64, "float32": torch.float32}[args.dtype]
    torch.manual_seed(args.seed)
    model = module.create_model().to(dtype)
    tol = args.tol if args.tol is not None else DEFAULT_TOL[args.dtype]
    replay = {k: getattr(args, k) for k in ("batch", "input_seed", "input_scale",
                                             "param_seed", "param_gain")
              if getattr(args, k) is not None}
    outcome = property_test(model, compiled.program, examples=args.examples, tol=tol,
                            seed=args.seed, max_batch=args.max_batch,
                            sizes=parse_size_args(args.size),
                            progress=not args.quiet and sys.stderr.isatty(),
                            replay=replay or None)
    print(format_outcome(f"{args.spec} ({compiled.program.name})", outcome, tol, args.dtype,
                         spec=shlex.quote(args.spec)))
    return 0 if outcome.ok else 1


def add_command(sub: Any, spec_args: Any) -> None:
    p = sub.add_parser("test", help="property-test the compiled model: inverses, gradients, "
                       "forms, on random inputs and weights")
    spec_args(p)
    p.add_argument("--examples", type=int, default=10, help="examples to draw (default 10)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    p.add_argument("--tol", type=float, help="relative error allowed (default 1e-8 in "
                   "float64, 1e-4 in float32)")
    p.add_argument("--max-batch", type=int, default=2)
    p.add_argument("--seed", type=int, default=0, help="hypothesis seed (same seed, same run)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress line")
    replay = p.add_argument_group("replay one example (as a failure prints it)")
    replay.add_argument("--batch", type=int)
    replay.add_argument("--input-seed", type=int)
    replay.add_argument("--input-scale", type=float)
    replay.add_argument("--param-seed", type=int)
    replay.add_argument("--param-gain", type=float)
    p.set_defaults(func=cmd_test)
