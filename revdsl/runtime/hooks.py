"""What makes a generated module behave like an ordinary nn.Module in reversible mode (copied
into generated modules with the rest of the runtime):

* the recompute runs as the forward ran: the training flags of the forward, and without firing
  forward hooks a second time (`_modes`, `_as_in_forward`);
* a reversible block's own hooks fire once, as on a plain call, and one that changes a value is
  refused (`_pre_hooks`, `_post_hooks`); its backward hooks see its streams' gradients;
* double backward is refused with the fix named (`_no_double_backward`);
* one call of a segment (`_Call`): the finiteness of every undone update, checked once per
  segment, and the reconstruction guard's comparison of rebuilt with real inputs;
* FSDP2 (`fully_shard`) on a reversible block: the engine gathers its parameters around the
  block's forward and its recompute, and hands the gradients to FSDP's reduce-scatter as the
  block's backward finishes (`_is_fsdp`, `_fsdp_hook`, `_fsdp_backward_done`).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch
from torch import nn


def _modes(module: nn.Module) -> tuple[bool, ...]:
    """The training flag of a module and of each of its submodules (in `modules()` order)."""
    return tuple(m.training for m in module.modules())


def _is_fsdp(module: nn.Module) -> bool:
    """Whether FSDP2's `fully_shard` manages this module (by class: FSDP is not imported)."""
    return any(c.__name__ == "FSDPModule" and c.__module__.startswith("torch.distributed.fsdp")
               for c in type(module).__mro__)


def _fsdp_hook(hook: Any) -> bool:
    """A forward hook FSDP2 registered (it gathers and frees parameters: never skipped, and
    not a user hook whose return value is checked)."""
    return str(getattr(hook, "__module__", "") or "").startswith("torch.distributed.fsdp")


def _fsdp_unit(block: nn.Module) -> bool:
    """A reversible block sharded as one unit; FSDP on a module inside it is refused (the
    backward calls its parts, so their own FSDP hooks could not gather at the right time)."""
    inner = any(_is_fsdp(m) for m in block.modules() if m is not block)
    if inner:
        raise RuntimeError(
            f"fully_shard on a module inside reversible block {type(block).__name__}: shard "
            "whole blocks (fully_shard(block) for each block of a reversible segment), or set "
            "model.reversible = False")
    return _is_fsdp(block)


def _fsdp_backward_done(block: nn.Module) -> None:
    """FSDP2's post-backward for a block whose backward the engine ran: reduce-scatter the
    gradients left on its gathered parameters, then free them (torch 2.6+ keeps its parameter
    groups on the module's FSDP state)."""
    state = getattr(block, "_get_fsdp_state", lambda: None)()
    groups = getattr(state, "_fsdp_param_groups", None)
    if groups is None and getattr(state, "_fsdp_param_group", None) is not None:
        groups = [state._fsdp_param_group]
    if groups is None or not all(hasattr(g, "post_backward") for g in groups):
        # without its post-backward the gradients would stay unreduced on the gathered
        # parameters: refuse rather than train on one rank's gradients
        raise RuntimeError(
            f"fully_shard on reversible block {type(block).__name__}: this torch's FSDP2 has "
            "no per-group post-backward the reversible engine can call (tested with torch "
            "2.13); shard the whole model (fully_shard(model)) instead")
    for group in groups:
        group.post_backward()


@contextlib.contextmanager
def _as_in_forward(module: nn.Module, modes: tuple[bool, ...],
                   mods: list[nn.Module] | None = None) -> Any:
    """Recompute `module` as the forward ran it: the training flags it had then (a
    `model.eval()` between forward and backward must not change the gradient), and without
    firing its forward hooks, or its submodules', a second time (they fired in the forward).
    Flags are written straight into the modules (nn.Module's __setattr__ is slow) and only
    when they changed. `mods`: module.modules() if the caller already listed them."""
    mods = list(module.modules()) if mods is None else mods
    now = [m.training for m in mods]
    changed = now != list(modes)
    hooked = [(m, m._forward_hooks, m._forward_pre_hooks) for m in mods
              if m._forward_hooks or m._forward_pre_hooks]
    if changed:
        for m, t in zip(mods, modes):
            m.__dict__["training"] = t
    for m, hooks, pre in hooked:  # FSDP's own hooks stay: they gather the parameters
        m._forward_hooks = type(hooks)((k, h) for k, h in hooks.items() if _fsdp_hook(h))
        m._forward_pre_hooks = type(pre)((k, h) for k, h in pre.items() if _fsdp_hook(h))
    try:
        yield
    finally:
        if changed:
            for m, t in zip(mods, now):
                m.__dict__["training"] = t
        for m, hooks, pre in hooked:
            m._forward_hooks, m._forward_pre_hooks = hooks, pre


def _no_double_backward() -> None:
    if torch.is_grad_enabled():
        raise RuntimeError(
            "double backward (create_graph=True) through a reversible segment is not supported: "
            "its backward rebuilds activations without a graph of how they depend on the "
            "parameters. Set model.reversible = False (plain autograd) for second-order "
            "gradients."
        )


class _Call:
    """One call of a reversible segment: what its blocks' backwards share. `checks` gathers
    whether each undone update was finite (read once, when the first block is undone: one
    synchronisation per segment); `kept` holds the segment's inputs when the reconstruction
    guard is on, to compare with their reconstruction."""

    def __init__(self, segment: nn.Module, kept: tuple[torch.Tensor, ...] | None
                 ) -> None:
        self.segment = segment
        self.trace = segment.trace
        self.kept = kept
        self.checks: list[Any] = []
        self.blocks: list[nn.Module] = []  # the chain's blocks (to prefetch the next undone)
        self.owned: set[int] = set()  # storages handed to the block undone next (buffers.py)

    def finish(self, rebuilt: dict[str, torch.Tensor]) -> None:
        flags = [f for _, _, steps in self.checks for _, _, f in steps]
        if flags and not bool(torch.stack(flags).all()):
            for i, block, steps in self.checks:  # in backward order: the first failure
                for k, step, ok in steps:
                    if not bool(ok):
                        by = getattr(step, "fn", "") or getattr(step, "module", "")
                        raise FloatingPointError(
                            f"reversible backward: undoing step {k} of block {i} "
                            f"({type(block).__name__}), the update of '{step.target}' by "
                            f"{by or 'its formula'}, gave non-finite values: its inverse "
                            "divides by a scale that vanished or overflowed at this precision. "
                            "Bound the scale away from 0 (e.g. sigmoid(s) + eps), train in "
                            "higher precision, or set model.reversible = False."
                        )
        if self.kept is not None:
            err = 0.0
            for name, kept in zip(self.segment.inputs, self.kept, strict=True):
                got = rebuilt[name].detach().float()
                ref = kept.detach().float()
                scale = ref.abs().max().item() if ref.numel() else 0.0
                diff = (got - ref).abs().max().item() if ref.numel() else 0.0
                err = max(err, diff / scale if scale > 0 else diff)
            self.segment.last_reconstruction_error = err
            threshold = self.segment.guard
            if threshold is not None and threshold > 0 and err > threshold:
                warnings.warn(
                    f"reversible segment: the backward rebuilt its inputs with relative error "
                    f"{err:.3g} (threshold {threshold:g}); gradients are drifting from plain "
                    "autograd's (ill-conditioned inverses at this depth and precision)",
                    RuntimeWarning, stacklevel=2)


_HOOK_CHANGED = (
    "a forward {which} on reversible block {name} returned a new value; a reversible block "
    "cannot honour hooks that change its inputs or outputs (its backward rebuilds the inputs "
    "from the outputs). Set model.reversible = False to use such hooks."
)


def _pre_hooks(block: nn.Module, args: tuple[torch.Tensor, ...], options: dict[str, Any]
               ) -> None:
    """Fire a reversible block's forward pre-hooks once, in the forward, as a plain call
    would; refuse one that changes the inputs."""
    for hid, hook in list(block._forward_pre_hooks.items()):
        if _fsdp_hook(hook):  # the engine gathers a sharded block's parameters itself
            continue
        if hid in block._forward_pre_hooks_with_kwargs:
            got = hook(block, args, options)
            same = got is None or _same_values(got[0], args)
        else:
            got = hook(block, args)
            same = got is None or _same_values(got, args)
        if not same:
            raise RuntimeError(_HOOK_CHANGED.format(which="pre-hook",
                                                    name=type(block).__name__))


def _same_values(got: Any, args: tuple[torch.Tensor, ...]) -> bool:
    got = got if isinstance(got, tuple) else (got,)
    return len(got) == len(args) and all(a is b for a, b in zip(got, args))


def _post_hooks(block: nn.Module, args: tuple[torch.Tensor, ...], options: dict[str, Any],
                output: Any) -> None:
    """Fire a reversible block's forward hooks once with its inputs and outputs; refuse one
    that changes the outputs (the gradients would silently ignore the change)."""
    for hid, hook in list(block._forward_hooks.items()):
        if _fsdp_hook(hook):
            continue
        if hid in block._forward_hooks_with_kwargs:
            got = hook(block, args, options, output)
        else:
            got = hook(block, args, output)
        if got is not None and got is not output and not (
                isinstance(got, tuple) and isinstance(output, tuple) and len(got) == len(output)
                and all(a is b for a, b in zip(got, output))):
            raise RuntimeError(_HOOK_CHANGED.format(which="hook", name=type(block).__name__))


def _backward_pre_hooks(block: nn.Module, gout: tuple[Any, ...]) -> tuple[Any, ...]:
    for hook in list(block._backward_pre_hooks.values()):
        got = hook(block, gout)
        if got is not None:
            gout = tuple(got)
    return gout


def _backward_hooks(block: nn.Module, din: tuple[Any, ...], gout: tuple[Any, ...]
                    ) -> tuple[Any, ...]:
    """A reversible block's full backward hooks, with the gradients of its stream inputs and
    outputs (as `register_full_backward_hook` gives them in plain mode); a returned tuple
    replaces the input gradients."""
    for hook in list(block._backward_hooks.values()):
        if not getattr(hook, "_is_full_backward_hook", True):
            continue
        got = hook(block, din, gout)
        if got is not None:
            din = tuple(got)
    return din


# ---- replay: the forward's autocast and generator state, restored for the recompute ----


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype, bool]:
    try:
        enabled = torch.is_autocast_enabled(device_type)
        dtype = torch.get_autocast_dtype(device_type)
    except (TypeError, AttributeError):  # torch < 2.4
        if device_type == "cpu":
            enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
        else:
            enabled, dtype = torch.is_autocast_enabled(), torch.get_autocast_gpu_dtype()
    return enabled, dtype, torch.is_autocast_cache_enabled()


def _rng_state(device: torch.device) -> torch.Tensor:
    """The state of the generator that ops on `device` draw from (5 KiB on CPU, 16 B on CUDA).

    Catalogued ops draw only from their tensors' device generator, so that one is enough."""
    if device.type == "cpu":
        return torch.get_rng_state()
    return getattr(torch, device.type).get_rng_state(device)


def _set_rng_state(device: torch.device, state: torch.Tensor) -> None:
    if device.type == "cpu":
        torch.set_rng_state(state)
    else:
        getattr(torch, device.type).set_rng_state(state, device)
