"""Hypothesis strategies of random specs together with what a verifier must say of them: random
coupling programs, multi-scale silos and segments joined by stored transitions, each valid or with
one planted fault (the line and a phrase of the reason a verifier must give). `any_specs()` mixes
them; `invalid_specs()` gives only faulty ones. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import strategies as st

# update forms: (template, invertible?) -- t is the target, F and G functions of other streams.
# Whether a form is a bijection in t is known by construction: an affine map with a scale whose
# range excludes 0 (exp > 0; sigmoid + eps > 0; tanh + 1.5 in (0.5, 2.5); 1 - sigmoid in (0, 1);
# a non-zero constant), a strictly increasing bijection (leaky_relu with a positive slope), or not
# (a scale that may vanish, a non-injective or non-monotone function, an overwrite).
FORMS: dict[str, tuple[str, bool]] = {
    "add": ("{t} += {F}", True),
    "sub": ("{t} -= {F}", True),
    "affine_exp": ("{t} = {t} * exp(tanh({G})) + {F}", True),
    "sigmoid_eps": ("{t} = {t} * (sigmoid({G}) + 0.01) + {F}", True),
    "tanh_bounded": ("{t} = {t} * (tanh({G}) + 1.5) + {F}", True),
    "one_minus_sigmoid": ("{t} = {t} * (1 - sigmoid({G})) + {F}", True),
    "const_scale": ("{t} = {t} * -0.5 + {F}", True),
    "double": ("{t} = {t} * 2 - {F}", True),
    "leaky": ("{t} = leaky_relu({t}, 0.25) * 2 + {F}", True),
    "zero_scale": ("{t} = {t} * 0 + {F}", False),
    "free_scale": ("{t} = {t} * {G} + {F}", False),
    "tanh_vanishing": ("{t} = {t} * (tanh({G}) + 0.5) + {F}", False),
    "relu": ("{t} = relu({t}) + {F}", False),
    "leaky_negative": ("{t} = leaky_relu({t}, -0.5) + {F}", False),
    "square": ("{t} = {t} * {t} + {F}", False),
    "overwrite": ("{t} = {F}", False),
}


@dataclass
class RandomSpec:
    """A generated spec and what an independent oracle expects the verifier to say.

    `expected` says in words why it is invalid (empty when valid); `reasons` pins each fault to
    the line its error must point at and a phrase the error must contain; `transitions` is the
    number of stored transitions between segments the report must list."""

    text: str
    valid: bool
    expected: list[str] = field(default_factory=list)
    reasons: list[tuple[int, str]] = field(default_factory=list)
    transitions: int = 0
    family: str = "coupling"


def _fn(reads: list[str], kind: int) -> str:
    terms = []
    for i, r in enumerate(reads):
        terms.append(f"linear({r}, out=8)" if (kind + i) % 2 else f"mlp(layernorm({r}))")
    return " + ".join(terms)


Value = tuple[str, int]  # (stream, version)


@dataclass
class _Step:
    """For the oracle: what a step replaces (old values -> new values) and the values it reads."""

    old: tuple[Value, ...]
    new: tuple[Value, ...]
    reads: tuple[Value, ...]


def undoable(steps: list[_Step], final: set[Value]) -> bool:
    """Whether some order undoes every step of a block from its final values: by exhaustive
    search over orders (independent of the verifier's scheduling). A step can be undone when
    the values it produced and the values it reads are all at hand; undoing it replaces the
    produced values with the old ones."""
    memo: dict[frozenset[int], bool] = {}

    def go(left: frozenset[int], known: frozenset[Value]) -> bool:
        if not left:
            return True
        if left in memo:
            return memo[left]
        ok = False
        for i in left:
            st_ = steps[i]
            if all(v in known for v in (*st_.new, *st_.reads)):
                rest = left - {i}
                # a value still read by a step not yet undone must stay at hand
                needed = {v for j in rest for v in steps[j].reads}
                if any(v in needed for v in st_.new):
                    continue
                if go(rest, (known - set(st_.new)) | set(st_.old)):
                    ok = True
                    break
        memo[left] = ok
        return ok

    return go(frozenset(range(len(steps))), frozenset(final))


FAULTS = ("self_read", "stale_read", "form")
_HEADER_LINES = 4  # model, input, `reversible r {`, `streams ...`


@st.composite
def coupling_specs(draw: st.DrawFn, min_streams: int = 2, max_streams: int = 4,
                   max_blocks: int = 2, max_steps: int = 4,
                   invalid: bool = True) -> RandomSpec:
    """Random reversible programs of coupling steps over 2-4 streams of shape [B, 4, 8].

    Each step is an update (a target, the streams its functions read, a form from FORMS) or a
    simultaneous assignment: a swap `a, b = [b, a]` or a Feistel step `a, b = [b, a + F(b)]`.
    With `invalid`, half of the programs get one fault at a random step: the step reads its own
    target, uses a non-invertible form, or reads a value another update replaced (through a
    local taken before that update). A replaced value is a fault only when no order of undoing
    recovers it; the oracle (`undoable`, an exhaustive search) decides, so such a program may be
    valid. `RandomSpec.valid` and `.expected` record the verdict."""
    n = draw(st.integers(min_streams, max_streams))
    names = [f"s{i}" for i in range(n)]
    good = [k for k, (_, ok) in FORMS.items() if ok]
    bad = [k for k, (_, ok) in FORMS.items() if not ok]
    shape = [draw(st.integers(1, max_steps)) for _ in range(draw(st.integers(1, max_blocks)))]
    total = sum(shape)
    fault_at = draw(st.integers(0, total - 1)) if invalid and draw(st.booleans()) else -1
    fault = draw(st.sampled_from(FAULTS)) if fault_at >= 0 else None
    lines: list[str] = []
    expected: list[str] = []
    reasons: list[tuple[int, str]] = []
    version = dict.fromkeys(names, 0)
    k = 0
    for steps in shape:
        lines.append("    block {")
        model: list[_Step] = []
        stale: tuple[str, int, str] | None = None  # (stream, line, target) of a replaced read
        for _ in range(steps):
            here = fault if k == fault_at else None
            k += 1
            t = draw(st.sampled_from(names))
            others = [x for x in names if x != t]
            if here is None and draw(st.integers(0, 5)) == 0:  # a swap or a Feistel step
                o = draw(st.sampled_from(others))
                feistel = draw(st.booleans())
                second = f"{t} + {_fn([o], 1)}" if feistel else t
                lines.append(f"        {t}, {o} = [{o}, {second}]")
                old = ((t, version[t]), (o, version[o]))
                version[t] += 1
                version[o] += 1
                model.append(_Step(old=old, new=((t, version[t]), (o, version[o])), reads=()))
                continue
            reads = draw(st.lists(st.sampled_from(others), min_size=1, max_size=2, unique=True))
            line = _HEADER_LINES + len(lines) + 1  # the line of this step, unless moved below
            values = [(r, version[r]) for r in reads]
            if here == "self_read":
                reads = [*reads, t]
                expected.append(f"{t} reads {t}")
                reasons.append((line, f"{t} is updated by a function that reads {t}"))
            elif here == "stale_read":
                # a local taken before another stream's update, read after it
                r = reads[0]
                local = f"u{k}"
                w = next(x for x in names if x != r)
                lines.append(f"        {local} = layernorm({r})")
                lines.append(f"        {r} += {_fn([w], 0)}")
                model.append(_Step(old=((r, version[r]),), new=((r, version[r] + 1),),
                                   reads=((w, version[w]),)))
                version[r] += 1
                reads = [local if x == r else x for x in reads]
                stale = (r, line + 2, t)
            form = draw(st.sampled_from(bad if here == "form" else good))
            if here == "form":
                expected.append(f"{t}: {form}")
                reasons.append((line, f"the update of {t} cannot be undone"))
            kind = draw(st.integers(0, 1))
            lines.append("        " + FORMS[form][0].format(t=t, F=_fn(reads, kind),
                                                            G=f"linear({reads[0]}, out=8)"))
            model.append(_Step(old=((t, version[t]),), new=((t, version[t] + 1),),
                               reads=tuple(values)))
            version[t] += 1
        if stale is not None and not undoable(model, set(version.items())):
            r, line, t = stale
            expected.append(f"{t} reads a replaced {r} that no undo order recovers")
            reasons.append((line, f"reads an earlier value of {r}"))
        lines.append("    }")
    text = (
        "model Random\ninput x: [B, 4, 8]\nreversible r {\n"
        f"    streams {', '.join(names)} = dup(x, {n})\n" + "\n".join(lines) + "\n}\n"
        f"y = concat({', '.join(names)}, dim=-1)\noutput y\n"
    )
    return RandomSpec(text=text, valid=not expected, expected=expected, reasons=reasons)


# ---- multi-scale silos ------------------------------------------------------------------------

SILO_FAULTS = ("later_read", "self_read", "resolution", "twice")


def _transform(i: int, j: int, wrong: bool = False) -> str:
    """s[i] brought to scale j's resolution (halved per scale): strided conv down, conv and
    upsample up; `wrong` lands one scale finer (a resolution change; never one that would
    broadcast, as a coarser 1x1 would)."""
    if i < j:
        stride = 2 ** (j - i) // (2 if wrong else 1)
        return f"conv2d(s[{i}], out=4, stride={stride})"
    if i > j:
        factor = 2 ** (i - j) * (2 if wrong else 1)
        return f"upsample(conv2d(s[{i}], out=4, kernel=1), {factor})"
    return f"conv2d(s[{i}], out=4, stride=2)" if wrong else f"conv2d(s[{i}], out=4)"


@st.composite
def silo_specs(draw: st.DrawFn, max_scales: int = 3, max_silos: int = 2,
               invalid: bool = True) -> RandomSpec:
    """Random multi-scale reversible programs (RevSilo-like) over scales s[0..n-1] of shape
    [B, 4, 8/2^i, 8/2^i]: silos that each add a new coarsest scale, then silos of one or two
    phases whose updates read only scales that are fixed at that point (updated earlier in the
    phase, or not in it). With `invalid`, half get one fault: two updates of a phase that read
    each other (a cycle), a read of the updated scale itself, a transform that changes the
    resolution, or a scale updated twice in one phase."""
    n = draw(st.integers(2, max_scales))
    lines = ["model RandomSilo", "input x: [B, 4, 8, 8]", "reversible r {",
             "    streams s[0] = x"]
    for j in range(1, n):
        lines += ["    silo {", "        phase {",
                  f"            stream s[{j}] = {_transform(j - 1, j)}", "        }", "    }"]
    silos: list[list[list[int]]] = []
    for _ in range(draw(st.integers(1, max_silos))):
        phases = []
        for _ in range(draw(st.integers(1, 2))):
            order = draw(st.permutations(list(range(n))))
            phases.append(list(order[: draw(st.integers(1, n))]))
        silos.append(phases)
    n_updates = sum(len(ph) for phases in silos for ph in phases)
    fault_at = draw(st.integers(0, n_updates - 1)) if invalid and draw(st.booleans()) else -1
    fault = draw(st.sampled_from(SILO_FAULTS)) if fault_at >= 0 else None
    expected: list[str] = []
    reasons: list[tuple[int, str]] = []
    k = 0
    for phases in silos:
        lines.append("    silo {")
        for ph in phases:
            lines.append("        phase {")
            must_read: dict[int, int] = {}  # a later update that must read an earlier scale
            for pos, j in enumerate(ph):
                here = fault if k == fault_at else None
                k += 1
                later = ph[pos + 1:]
                allowed = [i for i in range(n) if i != j and i not in later]
                if here == "later_read" and not later:
                    here = None  # nothing is updated later in this phase
                reads = draw(st.lists(st.sampled_from(allowed), min_size=1,
                                      max_size=min(2, len(allowed)), unique=True)
                             ) if allowed else []
                line = len(lines) + 1
                wrong = -1
                if j in must_read and must_read[j] not in reads:
                    reads = [*reads, must_read[j]]  # closes the planted cycle
                if here == "later_read":
                    # every update of a phase reads the values from before it: a read of a
                    # scale updated later is a fault only when it closes a cycle, so the later
                    # update is made to read this one
                    bad = draw(st.sampled_from(later))
                    reads = [*reads, bad]
                    must_read[bad] = j
                    expected.append(f"s{j} and s{bad} read each other in one phase")
                    reasons.append((line, f"reads s{bad}, which this phase also updates"))
                elif here == "self_read":
                    reads = [*reads, j]
                    expected.append(f"s{j} reads itself")
                    reasons.append((line, f"s{j} is updated by a function that reads s{j}"))
                elif not reads:
                    continue  # a fault that needs a read, and nothing to read: leave it out
                elif here == "resolution":
                    reads = reads[:1]
                    wrong = reads[0]
                    expected.append(f"s{j} gets a value at another resolution")
                    reasons.append((line, "a reversible step cannot change a stream's shape"))
                terms = " + ".join(_transform(i, j, wrong=i == wrong) for i in reads)
                lines.append(f"            s[{j}] += {terms}")
                if here == "twice":
                    expected.append(f"s{j} updated twice in a phase")
                    reasons.append((line + 1, "is updated twice in one phase"))
                    lines.append(f"            s[{j}] += {terms}")
            if lines[-1] == "        phase {":
                lines.pop()  # an empty phase: drop it
            else:
                lines.append("        }")
        if lines[-1] == "    silo {":
            lines.pop()
        else:
            lines.append("    }")
    lines += ["}", "y = " + " + ".join(f"global_avg_pool(s[{i}])" for i in range(n)),
              "output y"]
    return RandomSpec(text="\n".join(lines) + "\n", valid=not expected, expected=expected,
                      reasons=reasons, family="silo")


# ---- segments with stored transitions -----------------------------------------------------

TRANSITION_FAULTS = ("width_in_coupling", "overwrite")


@st.composite
def transition_specs(draw: st.DrawFn, max_segments: int = 3, invalid: bool = True
                     ) -> RandomSpec:
    """Random chains of reversible segments of different widths joined by stored transitions
    (a plain statement or a named `block`), which the report must list as transitions. With
    `invalid`, half get one fault inside a segment: a coupling whose function changes the
    stream's width (which belongs in a transition), or a step that overwrites a stream."""
    n_seg = draw(st.integers(2, max_segments))
    widths = [draw(st.sampled_from([4, 8, 12])) for _ in range(n_seg)]
    steps = [draw(st.integers(1, 3)) for _ in range(n_seg)]
    total = sum(steps)
    fault_at = draw(st.integers(0, total - 1)) if invalid and draw(st.booleans()) else -1
    fault = draw(st.sampled_from(TRANSITION_FAULTS)) if fault_at >= 0 else None
    lines = ["model RandomStages", f"input x: [B, 5, {widths[0]}]", "z = layernorm(x)"]
    expected: list[str] = []
    reasons: list[tuple[int, str]] = []
    k = 0
    for i, w in enumerate(widths):
        if i > 0:
            if draw(st.booleans()):
                lines.append(f"z = linear(concat(a, b, dim=-1), out={w})")
            else:
                lines += [f"block stage{i} {{", "    h = concat(a, b, dim=-1)",
                          f"    z = linear(h + mlp(layernorm(h)), out={w})", "}"]
        lines += [f"reversible seg{i} {{", "    streams a, b = dup(z)"]
        for _ in range(steps[i]):
            here = fault if k == fault_at else None
            k += 1
            t, r = draw(st.sampled_from([("a", "b"), ("b", "a")]))
            line = len(lines) + 1
            if here == "width_in_coupling":
                lines.append(f"    {t} += linear({r}, out={w + 4})")
                expected.append(f"{t} gets width {w + 4} inside a coupling")
                reasons.append((line, "a reversible step cannot change a stream's shape"))
            elif here == "overwrite":
                lines.append(f"    {t} = mlp(layernorm({r}))")
                expected.append(f"{t} overwritten")
                reasons.append((line, f"the update of {t} cannot be undone"))
            else:
                fn = draw(st.sampled_from(["mlp(layernorm({r}))",
                                           "attention(layernorm({r}), heads=2)",
                                           "linear({r}, out={w})"]))
                lines.append(f"    {t} += " + fn.format(r=r, w=w))
        lines.append("}")
    lines += ["y = mean(concat(a, b, dim=-1), dim=1)", "output y"]
    return RandomSpec(text="\n".join(lines) + "\n", valid=not expected, expected=expected,
                      reasons=reasons, transitions=n_seg - 1, family="transition")


def any_specs(invalid: bool = True) -> st.SearchStrategy[RandomSpec]:
    """Random specs of every kind above."""
    return st.one_of(coupling_specs(invalid=invalid), silo_specs(invalid=invalid),
                     transition_specs(invalid=invalid))


def invalid_specs() -> st.SearchStrategy[RandomSpec]:
    """Random specs that the verifier must reject, each with its expected reasons."""
    return any_specs(invalid=True).filter(lambda s: not s.valid)


# ---- random inputs ----------------------------------------------------------------------------
