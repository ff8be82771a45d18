"""Calling a student's function across a process boundary, with data only on the wire.

The batch grader never runs student code in its own process. It sends the student's kernel the
inputs of one call; this module, running there, rebuilds them, calls the function, and sends
back what happened as plain arrays: the return value, gradients with respect to inputs, and the
state of every tensor and module argument after the call. The grader rebuilds fresh tensors from
those arrays, so nothing the student's process returns can run code in the grader's process:

* a message is a JSON header plus ``.npy`` blobs read with ``allow_pickle=False``;
* a tensor becomes ``{"t": "tensor", "i": blob index, "dtype": ..., "grad": requires_grad}``;
  numbers, strings, None, lists, tuples and dicts are written out as JSON; any other object
  becomes ``{"t": "object", "type": its type name}`` (so feedback can say "got a str");
* a parameter of a module argument that comes back in the result (``param_groups``) becomes a
  reference ``{"t": "param", "arg": k, "name": "backbone.0.weight"}``, which the grader maps to
  its own copy of that module;
* ``torch.Generator`` arguments travel as their state, ``nn.Module`` arguments as a spec of a few
  known layer types plus their state dict.

This file imports only the standard library, numpy and torch: its source is sent to the student's
kernel as the text of the grader's last cell (``serve`` runs there), so it does not depend on what
the kernel can import from coursekit. The same ``invoke`` runs in-process for ``check()``.
"""
from __future__ import annotations

import functools
import io
import json
import math
import os
import signal
import socket
import struct
import time
import types

import numpy as np
import torch
from torch import nn

# Caps on what one message may cost the side that reads it, checked before anything is parsed or built
MAX_HEADER_BYTES = 2**20  # the JSON header holds names and numbers, never data: the checks' are under 4 KiB
MAX_MESSAGE_BYTES = 8 * 2**20  # the arrays of one message: the checks' inputs and answers are under 16 KiB
MAX_MODULE_PARAMETERS = 2**16  # a module that comes back: the checks' own modules have under 200 parameters
MAX_MODULE_LAYERS = 256  # layers and containers in one module spec: the checks' modules have under 20
MAX_DEPTH = 12  # nesting depth of lists, tuples and dicts
MAX_ITEMS = 10_000  # items in one list, tuple or dict
DTYPES = {  # dtypes that travel; anything else is converted or refused
    "torch.bool": (torch.bool, np.bool_), "torch.uint8": (torch.uint8, np.uint8), "torch.int8": (torch.int8, np.int8),
    "torch.int16": (torch.int16, np.int16), "torch.int32": (torch.int32, np.int32),
    "torch.int64": (torch.int64, np.int64), "torch.float16": (torch.float16, np.float16),
    "torch.bfloat16": (torch.bfloat16, np.float32), "torch.float32": (torch.float32, np.float32),
    "torch.float64": (torch.float64, np.float64),
}
NUMPY_KINDS = "biuf"  # numpy arrays returned by a student: bool, int, unsigned, float
BACKWARD_FAILED = "backpropagating from your result failed: "


def safe_name(name) -> str:
    """A type or exception name that came from the student's process, shown only if Python, numpy or
    torch define it: feedback never carries text the submission chose (it could be a file's content)."""
    return name if isinstance(name, str) and name in _known_names() else "(a type of its own)"


@functools.lru_cache(maxsize=1)
def _known_names() -> frozenset[str]:
    import builtins

    return frozenset({name for name, value in vars(builtins).items() if isinstance(value, type)} | {
        "Tensor", "Parameter", "ndarray", "Generator", "Module", "function", "method", "module", "NoneType",
        "generator", "dict_values", "dict_keys", "OutOfMemoryError", "LinAlgError", "AxisError",
        "ndarray of object", "ndarray of complex64", "ndarray of complex128", "ndarray of str", "Timeout"})


class WireError(Exception):
    """A message that does not follow this format (from the other side, treated as a wrong answer)."""


class Foreign:
    """An object of a type that does not travel: only its type name comes back."""

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<{self.type_name} object>"


# ---------------------------------------------------------------------------------------------
# Values <-> JSON + arrays
# ---------------------------------------------------------------------------------------------


def _tensor_array(tensor: torch.Tensor) -> tuple[np.ndarray, str]:
    """A plain numpy copy of ``tensor`` and its dtype name (bfloat16 travels as float32)."""
    dtype = str(tensor.dtype)
    if dtype not in DTYPES:
        raise WireError(f"tensors of dtype {dtype} are not supported")
    plain = torch.Tensor.detach(tensor).cpu()
    if plain.dtype == torch.bfloat16:
        plain = plain.float()
    array = np.array(plain.numpy(), copy=True)
    if not isinstance(array, np.ndarray) or array.dtype != DTYPES[dtype][1]:
        raise WireError("a tensor could not be converted to an array")
    return array, dtype


def encode(value, arrays: list, params: dict | None = None, depth: int = 0) -> dict:
    """JSON-able description of ``value``; tensors are appended to ``arrays``.

    ``params`` maps ``id(parameter)`` of module arguments to ``(argument index, name)``.
    """
    if depth > MAX_DEPTH:
        raise WireError("the result is nested too deeply")
    if value is None:
        return {"t": "none"}
    if isinstance(value, (bool, np.bool_)):
        return {"t": "bool", "v": bool(value)}
    if isinstance(value, (int, np.integer)):
        return {"t": "int", "v": int(value)} if abs(int(value)) < 2**63 else {"t": "float", "v": float(value)}
    if isinstance(value, (float, np.floating)):
        return {"t": "float", "v": float(value)}
    if isinstance(value, str):
        return {"t": "str", "v": value[:2000]}
    if isinstance(value, torch.Tensor):
        if params and id(value) in params:
            arg, name = params[id(value)]
            return {"t": "param", "arg": arg, "name": name}
        array, dtype = _tensor_array(value)
        arrays.append(array)
        return {"t": "tensor", "i": len(arrays) - 1, "dtype": dtype, "grad": bool(value.requires_grad)}
    if isinstance(value, np.ndarray):
        if value.dtype.kind not in NUMPY_KINDS:
            return {"t": "object", "type": f"ndarray of {'str' if value.dtype.kind == 'U' else value.dtype}"}
        arrays.append(np.array(value, copy=True))
        return {"t": "ndarray", "i": len(arrays) - 1}
    if isinstance(value, torch.Generator):
        return {"t": "generator", "state": encode(value.get_state(), arrays)}
    if isinstance(value, nn.Module):
        return {"t": "module", "spec": module_spec(value), "state": encode_state(value, arrays)}
    if isinstance(value, dict):
        items = list(value.items())[:MAX_ITEMS + 1]
        return {"t": "dict", "items": [[encode(k, arrays, params, depth + 1), encode(v, arrays, params, depth + 1)]
                                       for k, v in _bounded(items)]}
    if isinstance(value, (list, tuple)) or isinstance(value, (types.GeneratorType, type({}.values()), type({}.keys()))):
        kind = "tuple" if isinstance(value, tuple) else "list"
        items = []
        for item in value:  # generators (model.parameters()) are read like the optimizer would
            items.append(item)
            _bounded(items)
        return {"t": kind, "items": [encode(item, arrays, params, depth + 1) for item in items]}
    return {"t": "object", "type": type(value).__name__}


def _bounded(items: list) -> list:
    if len(items) > MAX_ITEMS:
        raise WireError(f"more than {MAX_ITEMS} items in one container")
    return items


def decode(node, arrays: list, modules: dict | None = None, depth: int = 0):
    """The value ``encode`` described, rebuilt from plain data; ``WireError`` for anything malformed.

    ``modules`` maps an argument index to the module whose parameters ``param`` references name.
    """
    if depth > MAX_DEPTH + 1 or not isinstance(node, dict):
        raise WireError("malformed value")
    kind = node.get("t")
    if kind == "none":
        return None
    if kind in ("bool", "int", "float", "str"):
        value = node.get("v")
        expected = {"bool": bool, "int": int, "float": (int, float), "str": str}[kind]
        if not isinstance(value, expected) or (kind == "int" and isinstance(value, bool)):
            raise WireError("malformed number or string")
        return float(value) if kind == "float" else value
    if kind == "tensor":
        dtype = node.get("dtype")
        if dtype not in DTYPES:
            raise WireError("unknown tensor dtype")
        array = _array(arrays, node.get("i"))
        if array.dtype != DTYPES[dtype][1]:
            raise WireError("the tensor's data does not match its dtype")
        tensor = torch.from_numpy(array.copy()).to(DTYPES[dtype][0])
        if node.get("grad") is True and tensor.is_floating_point():
            tensor.requires_grad_(True)
        return tensor
    if kind == "ndarray":
        array = _array(arrays, node.get("i"))
        if array.dtype.kind not in NUMPY_KINDS:
            raise WireError("unsupported array dtype")
        return array.copy()
    if kind == "param":
        module = (modules or {}).get(node.get("arg"))
        parameters = dict(module.named_parameters()) if module is not None else {}
        if node.get("name") not in parameters:
            raise WireError("a parameter reference names no parameter of the model")
        return parameters[node["name"]]
    if kind == "generator":
        generator = torch.Generator()
        generator.set_state(decode(node.get("state"), arrays, depth=depth + 1))
        return generator
    if kind == "module":
        check_spec(node.get("spec"), sum(a.size for a in arrays if a is not None))
        module = build_module(node.get("spec"))
        load_state(module, node.get("state"), arrays)
        return module
    if kind == "object":
        return Foreign(safe_name(node.get("type")))
    items = node.get("items")
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        raise WireError("malformed container")
    if kind in ("list", "tuple"):
        decoded = [decode(item, arrays, modules, depth + 1) for item in items]
        return tuple(decoded) if kind == "tuple" else decoded
    if kind == "dict":
        result = {}
        for pair in items:
            if not isinstance(pair, list) or len(pair) != 2:
                raise WireError("malformed dict")
            key = decode(pair[0], arrays, modules, depth + 1)
            result[_hashable(key)] = decode(pair[1], arrays, modules, depth + 1)
        return result
    raise WireError("unknown value kind")


def _hashable(key):
    if isinstance(key, list):
        return tuple(_hashable(k) for k in key)
    if isinstance(key, (torch.Tensor, np.ndarray, dict)):
        raise WireError("a dict key that is not a number, string or tuple")
    return key


def _array(arrays: list, index) -> np.ndarray:
    """The array ``index`` refers to, taken out of ``arrays``: a message whose values refer to one
    array twice (to cost the reader one copy per reference) is refused."""
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(arrays):
        raise WireError("a value refers to a missing array")
    array = arrays[index]
    if array is None:
        raise WireError("a value refers to an array already used: each array is used once")
    arrays[index] = None
    return array


# ---------------------------------------------------------------------------------------------
# Modules: a spec of known layer types, and their state
# ---------------------------------------------------------------------------------------------


def module_spec(module: nn.Module) -> dict:
    """The architecture of ``module`` in known layer types; other modules become plain containers."""
    if isinstance(module, nn.Linear):
        return {"kind": "Linear", "in": module.in_features, "out": module.out_features, "bias": module.bias is not None}
    if isinstance(module, nn.BatchNorm1d):
        return {"kind": "BatchNorm1d", "features": module.num_features}
    children = [[name, module_spec(child)] for name, child in module.named_children()]
    return {"kind": "Sequential" if isinstance(module, nn.Sequential) else "Container", "children": children}


def check_spec(spec, elements: int) -> None:
    """Refuse, before anything is built, a module spec over the grader's caps or with more
    parameters than the message holds numbers (``elements``) to fill them."""
    count, layers, pending = 0, 0, [(spec, 0)]
    while pending:
        node, depth = pending.pop()
        layers += 1
        if not isinstance(node, dict) or depth > MAX_DEPTH or layers > MAX_MODULE_LAYERS:
            raise WireError(f"a module spec that is malformed or has more than {MAX_MODULE_LAYERS} layers")
        sizes = [node.get(key, 0) for key in ("in", "out", "features")]
        if not all(isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= MAX_MODULE_PARAMETERS
                   for size in sizes):
            raise WireError("a module spec with a malformed layer size")
        if node.get("kind") == "Linear":
            count += sizes[0] * sizes[1] + sizes[1]
        elif node.get("kind") == "BatchNorm1d":
            count += 2 * sizes[2]
        children = node.get("children", [])
        if not isinstance(children, list):
            raise WireError("a module spec that is malformed")
        pending += [(child[1], depth + 1) for child in children if isinstance(child, list) and len(child) == 2]
        if count > min(MAX_MODULE_PARAMETERS, elements):
            raise WireError(f"a module of more than {min(MAX_MODULE_PARAMETERS, elements)} parameters "
                            "(the grader's cap, or more than the answer holds numbers)")


def build_module(spec) -> nn.Module:
    if not isinstance(spec, dict):
        raise WireError("malformed module")
    kind = spec.get("kind")
    if kind == "Linear":
        return nn.Linear(int(spec["in"]), int(spec["out"]), bias=bool(spec["bias"]))
    if kind == "BatchNorm1d":
        return nn.BatchNorm1d(int(spec["features"]))
    if kind in ("Sequential", "Container"):
        children = [(str(name), build_module(child)) for name, child in spec.get("children", [])]
        if kind == "Sequential":
            return nn.Sequential(*[child for _, child in children])
        module = nn.Module()
        for name, child in children:
            module.add_module(name, child)
        return module
    raise WireError("unknown module kind")


def encode_state(module: nn.Module, arrays: list) -> dict:
    """Every parameter and buffer, with the flags the checks read (requires_grad, autograd history)."""
    tensors, flags = {}, {}
    for name, parameter in module.named_parameters():
        flags[name] = {"requires_grad": bool(parameter.requires_grad), "history": parameter.grad_fn is not None}
    for name, tensor in module.state_dict(keep_vars=True).items():
        tensors[name] = encode(torch.Tensor.detach(tensor), arrays)
    return {"tensors": tensors, "flags": flags, "training": bool(module.training)}


def load_state(module: nn.Module, state, arrays: list) -> dict:
    """Copy ``state`` into ``module`` (same architecture); returns the parameter flags it carried."""
    if not isinstance(state, dict) or not isinstance(state.get("tensors"), dict):
        raise WireError("malformed module state")
    own = module.state_dict(keep_vars=True)
    if set(state["tensors"]) != set(own):
        raise WireError("the module state names other tensors than the model has")
    with torch.no_grad():
        for name, node in state["tensors"].items():
            value = decode(node, arrays)
            if not isinstance(value, torch.Tensor) or value.shape != own[name].shape:
                raise WireError(f"the module state of {name} has the wrong shape")
            own[name].copy_(value)
    sent = state.get("flags") if isinstance(state.get("flags"), dict) else {}
    flags = {}
    for name, parameter in module.named_parameters():
        flag = sent.get(name) if isinstance(sent.get(name), dict) else {}
        flags[name] = {"requires_grad": flag.get("requires_grad", parameter.requires_grad) is True,
                       "history": flag.get("history", False) is True}
        parameter.requires_grad_(flags[name]["requires_grad"])
    module.train(state.get("training", True) is True)
    return flags


# ---------------------------------------------------------------------------------------------
# One call of the student's function (the same code in-process and in the student's kernel)
# ---------------------------------------------------------------------------------------------


def invoke(fn, args: list, kwargs: dict, backward: dict | None = None, global_seed: int | None = None):
    """Call ``fn(*args, **kwargs)``; return ``(outcome, value, grads)``.

    ``outcome`` is "ok", or ("not_implemented" | "exit" | "raised", text). With ``backward``
    ({"upstream": tensor or None}), the floating tensor arguments that require grad (also inside
    lists) are gradient leaves: after the call, ``value`` (a scalar) or ``sum(value * upstream)``
    is backpropagated and ``grads`` holds each leaf's ``.grad`` (None where none arrived).
    """
    leaves = [a for a in tensors_in(args) if a.requires_grad] if backward is not None else []
    if global_seed is not None:
        torch.manual_seed(global_seed)  # the checks reseed it to show that results do not depend on it
    try:
        value = fn(*args, **kwargs)
    except NotImplementedError:
        return ("not_implemented", ""), None, []
    except SystemExit:
        return ("exit", ""), None, []
    except Exception as error:  # noqa: BLE001 - any exception of the student's function is feedback
        return ("raised", _describe(error)), None, []
    grads = []
    if backward is not None and isinstance(value, torch.Tensor) and value.requires_grad:
        upstream = backward.get("upstream")
        try:
            total = value if upstream is None else (value * upstream).sum()
            total.backward()
        except Exception as error:  # noqa: BLE001 - e.g. a non-scalar loss
            return ("raised", BACKWARD_FAILED + _describe(error)), value, []
        grads = [leaf.grad for leaf in leaves]
    elif backward is not None:
        grads = [None for _ in leaves]
    return "ok", value, grads


def tensors_in(values) -> list:
    found = []
    for value in values:
        if isinstance(value, torch.Tensor):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            found += tensors_in(value)
        elif isinstance(value, dict):
            found += tensors_in(list(value.values()))
    return found


def _describe(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200]}" if lines else type(error).__name__


def encode_reply(outcome, value, grads, args: list) -> tuple[dict, list]:
    """The reply to one call: outcome, value, gradients and every argument's state after the call."""
    arrays: list = []
    params = {}
    for index, arg in enumerate(args):
        if isinstance(arg, nn.Module):
            params.update({id(p): (index, name) for name, p in arg.named_parameters()})
    header = {"outcome": outcome}
    try:
        header["value"] = encode(value, arrays, params)
        header["grads"] = [None if g is None else encode(g, arrays) for g in grads]
        header["args"] = [_argument_after(arg, arrays) for arg in args]
    except Exception as error:  # noqa: BLE001 - a result that does not travel is a wrong answer
        arrays = []
        header = {"outcome": ["unreadable", _describe(error)]}
    return header, arrays


def _argument_after(arg, arrays: list):
    """What the grader needs to mirror in-place changes: tensors, modules, lists and dicts of tensors."""
    if isinstance(arg, (torch.Tensor, nn.Module)):
        return encode(arg if isinstance(arg, nn.Module) else torch.Tensor.detach(arg), arrays)
    if isinstance(arg, (list, tuple)):
        return {"t": "list", "items": [_argument_after(a, arrays) for a in arg]}
    if isinstance(arg, dict):
        return {"t": "dict", "items": [[encode(k, arrays), _argument_after(v, arrays)] for k, v in arg.items()]}
    return {"t": "none"}


# ---------------------------------------------------------------------------------------------
# Messages on a stream socket: header length, JSON header, then each array as .npy bytes
# ---------------------------------------------------------------------------------------------


def send_message(connection: socket.socket, header: dict, arrays: list = ()) -> None:
    blobs = []
    for array in arrays:
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        blobs.append(buffer.getvalue())
    head = json.dumps({**header, "blobs": [len(b) for b in blobs]}).encode()
    connection.sendall(struct.pack("!Q", len(head)) + head + b"".join(blobs))


def receive_message(connection: socket.socket, deadline: float | None = None) -> tuple[dict, list]:
    """One message; ``TimeoutError`` past ``deadline`` (time.monotonic), ``EOFError`` when closed,
    ``WireError`` when malformed. Arrays are read with ``allow_pickle=False``."""
    (size,) = struct.unpack("!Q", _read(connection, 8, deadline))
    if size > MAX_HEADER_BYTES:
        raise WireError(f"a message header over {MAX_HEADER_BYTES} bytes")
    try:
        header = json.loads(_read(connection, size, deadline))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise WireError("malformed header") from None
    blobs = header.pop("blobs", None) if isinstance(header, dict) else None
    if not isinstance(blobs, list) or not all(isinstance(b, int) and 0 <= b <= MAX_MESSAGE_BYTES for b in blobs) \
            or sum(blobs) > MAX_MESSAGE_BYTES:
        raise WireError(f"a message whose arrays are malformed or over {MAX_MESSAGE_BYTES} bytes")
    return header, [load_array(_read(connection, length, deadline)) for length in blobs]


def load_array(blob: bytes) -> np.ndarray:
    """One ``.npy`` blob as an array, without pickles, and only if its header declares exactly the
    data the blob holds (numpy allocates what the header declares before reading the data)."""
    buffer = io.BytesIO(blob)
    try:
        read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                       (2, 0): np.lib.format.read_array_header_2_0}[np.lib.format.read_magic(buffer)]
        shape, _, dtype = read_header(buffer)
        declared = dtype.itemsize * math.prod(shape)
        if dtype.hasobject or declared != len(blob) - buffer.tell():
            raise ValueError
        buffer.seek(0)
        array = np.load(buffer, allow_pickle=False)
    except (KeyError, ValueError, OSError, EOFError, TypeError, SyntaxError):
        raise WireError("malformed array") from None
    if not isinstance(array, np.ndarray):
        raise WireError("malformed array")
    return array


def _read(connection: socket.socket, size: int, deadline: float | None) -> bytes:
    chunks, remaining = [], size
    while remaining:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            connection.settimeout(left)
        try:
            chunk = connection.recv(min(remaining, 1 << 20))
        except socket.timeout:
            raise TimeoutError from None
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


# ---------------------------------------------------------------------------------------------
# The student's side: serve the grader's calls (runs in the student's kernel)
# ---------------------------------------------------------------------------------------------


def connect(address) -> socket.socket:
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    connection.connect(address)
    return connection


def serve(address, namespace: dict) -> None:
    """Answer the grader until it says stop. For each exercise the grader names a function; a
    forked child answers its calls on a connection of its own, so that an endless loop or an
    ``os._exit`` ends only that exercise (the parent kills the child at the exercise's time limit)."""
    control = connect(address)
    send_message(control, {"op": "control"})
    while True:
        header, _ = receive_message(control)
        if header.get("op") != "exercise":
            return
        limit = float(header["time_limit"]) + 5.0
        pid = os.fork() if hasattr(os, "fork") else 0
        if pid == 0:
            try:
                _serve_exercise(address, namespace, header["function"])
            finally:
                if hasattr(os, "fork"):
                    os._exit(0)
            continue
        status = _wait(pid, limit)
        send_message(control, {"op": "exercise_done", "status": status})


def _wait(pid: int, limit: float) -> str:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return "ended"
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "killed"


def _serve_exercise(address, namespace: dict, function_name: str) -> None:
    torch.set_num_threads(1)
    connection = connect(address)
    fn = namespace.get(function_name)
    found = {"op": "exercise", "found": fn is not None, "callable": callable(fn), "type": type(fn).__name__}
    send_message(connection, found)
    while True:
        request, arrays = receive_message(connection)
        if request.get("op") != "call":
            return
        try:
            args = decode(request["args"], arrays)
            kwargs = decode(request["kwargs"], arrays)
            backward = None
            if request.get("backward") is not None:
                backward = {"upstream": decode(request["backward"]["upstream"], arrays)}
        except Exception as error:  # noqa: BLE001 - the grader's request is trusted; report, do not hang
            send_message(connection, {"outcome": ["unreadable", "request: " + _describe(error)]})
            continue
        outcome, value, grads = invoke(fn, list(args), dict(kwargs), backward, request.get("global_seed"))
        header, reply_arrays = encode_reply(outcome, value, grads, list(args))
        send_message(connection, header, reply_arrays)
