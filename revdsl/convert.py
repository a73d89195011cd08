"""`revdsl convert SPEC CHECKPOINT --from slowfast -o weights.pt`: an official checkpoint's
weights under the compiled spec's names and shapes (every shape checked, missing and unexpected
names reported, a different configuration refused with the parameter that differs), written as
a plain state dict that the generated model loads with `load_state_dict`. With `--to SOURCE`
the other way: our weights (a state dict, or a checkpoint holding one) in the reference's
names, for the official code's `load_state_dict` (SlowFast's under `model_state`).

The mappings are data per source in `revdsl.weights` (slowfast, revbifpn), not code here."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

WRAP = {"slowfast": "model_state"}   # how the official code expects its checkpoint file


def _save(obj: Any, path: Path) -> None:
    """torch.save through the CLI's atomic writer (no half-written file on any error)."""
    import io

    import torch

    from revdsl.files import write_atomically

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomically(path, buffer.getvalue())


def cmd_convert(args: argparse.Namespace) -> int:
    from revdsl.files import UsageError, check_output, parse_sets
    from revdsl.loader import load
    from revdsl.weights import read_checkpoint, to_ours, to_reference

    out = Path(args.output)
    check_output(out, [args.spec, args.checkpoint])
    if args.size:
        raise UsageError("convert takes no --size: a model's weights do not depend on its input "
                         "sizes")
    if not Path(args.spec).is_file():
        raise UsageError(f"{args.spec}: no such spec file")
    module = load(args.spec, **parse_sets(args.set))
    state = read_checkpoint(args.checkpoint, trust=args.trust_checkpoint)
    extra: dict[str, Any] = {}
    if args.num_classes is not None:
        extra["num_classes"] = args.num_classes
    model = module.create_model(**extra)
    if args.source:
        result = to_ours(model, state, args.source, strict=not args.allow_unexpected)
        _save(result.state_dict, out)
        print(f"{args.checkpoint}: {len(result.state_dict)} tensors mapped from {args.source} "
              f"names onto {type(model).__name__}; wrote {out}")
        for name in result.unexpected:
            print(f"warning: not used: {name}")
        return 0
    model.load_state_dict(state, strict=True)
    ref = to_reference(model, args.target)
    _save({WRAP[args.target]: ref} if args.target in WRAP else ref, out)
    print(f"{args.checkpoint}: {len(ref)} tensors in {args.target} names; wrote {out}")
    return 0


def add_command(sub: Any, spec_args: Any) -> None:
    p = sub.add_parser("convert", help="map an official checkpoint onto a spec's model "
                                       "(or back)")
    spec_args(p)
    p.add_argument("checkpoint", help="the checkpoint file (.pyth, .pth, .pt)")
    way = p.add_mutually_exclusive_group(required=True)
    way.add_argument("--from", dest="source", choices=("slowfast", "revbifpn"),
                     help="the official code that wrote CHECKPOINT")
    way.add_argument("--to", dest="target", choices=("slowfast", "revbifpn"),
                     help="write our weights (CHECKPOINT) in this official code's names")
    p.add_argument("-o", "--output", required=True, help="the file to write")
    p.add_argument("--num-classes", type=int, default=None,
                   help="the head's width, if not the spec's default")
    p.add_argument("--allow-unexpected", action="store_true",
                   help="warn about checkpoint tensors nothing reads instead of refusing")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="unpickle Python objects in the file (only for files you trust)")
    p.set_defaults(func=cmd_convert)
