"""Names the generated code already uses, which a spec's names must not take.

A spec's names become Python names in the generated module: the model's class name, submodule
attributes (`... as ffn`, segment and block names), local variables (values and streams) and
constructor arguments. Each kind is refused where it would collide:

* `MODULE_ATTRIBUTES`: attributes of every `nn.Module` (torch's own, as of the torch this release
  supports; a test checks this list against the installed torch) and of the generated classes;
* `module_globals()`: the generated file's top-level names (runtime definitions, imports,
  `PARAMETERS`, `create_model`), which a model name, value or stream would shadow.

Nothing here imports torch.
"""

from __future__ import annotations

import functools
import keyword

# dir(torch.nn.Module), torch 2.3-2.13, plus the attributes nn.Module.__init__ sets
_NN_MODULE = frozenset({
    "T_destination", "add_module", "apply", "bfloat16", "buffers", "call_super_init", "children",
    "compile", "cpu", "cuda", "double", "dump_patches", "eval", "extra_repr", "float", "forward",
    "get_buffer", "get_extra_state", "get_parameter", "get_submodule", "half", "ipu",
    "load_state_dict", "modules", "mtia", "named_buffers", "named_children", "named_modules",
    "named_parameters", "parameters", "register_backward_hook", "register_buffer",
    "register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook",
    "register_full_backward_pre_hook", "register_load_state_dict_post_hook",
    "register_load_state_dict_pre_hook", "register_module", "register_parameter",
    "register_state_dict_post_hook", "register_state_dict_pre_hook", "requires_grad_",
    "set_extra_state", "set_submodule", "share_memory", "state_dict", "to", "to_empty", "train",
    "type", "xpu", "zero_grad", "training",
})

# attributes and methods of the generated block, segment and model classes
_GENERATED_ATTRIBUTES = frozenset({
    "inverse", "STEPS", "INPUTS", "OUTPUTS", "STOCHASTIC", "reversible", "checkpoint",
    "forward_features", "forward_head", "blocks", "inputs", "outputs", "trace",
    "default_cfg", "pretrained_cfg", "reconstruction_error", "set_reconstruction_guard",
    "set_plan", "plan",
    "guard", "last_reconstruction_error", "self",
})

MODULE_ATTRIBUTES = _NN_MODULE | _GENERATED_ATTRIBUTES

# imported or used by name in every generated file
_IMPORTS = frozenset({
    "annotations", "contextlib", "math", "threading", "warnings", "Any", "NamedTuple", "torch",
    "nn", "F",
    "PARAMETERS", "BLOCK_COSTS", "KEPT_BYTES", "create_model", "options", "pre_logits",
})


@functools.cache
def module_globals() -> frozenset[str]:
    """Every top-level name a generated module may define or import."""
    from revdsl.runtime_src import definitions

    return _IMPORTS | frozenset(definitions())


def python_reserved(name: str) -> bool:
    """Keywords, soft keywords and builtins that generated code relies on."""
    return keyword.iskeyword(name) or keyword.issoftkeyword(name) or name in (
        "None", "True", "False", "super", "tuple", "dict", "list", "int", "float", "str",
        "len", "range", "zip", "getattr", "setattr", "isinstance", "print", "type", "object",
    )
