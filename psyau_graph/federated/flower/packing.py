"""Send a model's tensors as one array per dtype instead of one object per tensor.

Flower 1.42 moves every array of an ``ArrayRecord`` as an object of its own: in the
deployment engine each one is a separate HTTP request on every hop (ServerApp →
SuperLink → SuperNode → ClientApp and back). FedPsyAU shares 160 tensors, so one train
message costs about 160 requests per hop and direction, each paying a scheduling
round-trip between two processes; on a loaded CPU that, not the bytes, is what a
deployment round waits for. :func:`pack_content` concatenates the tensors of a
message's ``"arrays"`` record into one flat tensor per dtype (in key order) and adds a
``"pack-layout"`` ``ConfigRecord`` (keys, dtypes, shapes, as JSON); :func:`unpack_content`
restores the original record exactly (a concatenation and its split are lossless). The
ServerApp's grid (:class:`~psyau_graph.federated.flower.polling_grid.PollingGrid`) packs
what it pushes and unpacks what it pulls, and the ClientApp unpacks what it receives and
packs its reply when the message came packed, so strategies only ever see per-tensor
records.
"""
from __future__ import annotations

import json
from collections import OrderedDict

import torch
from flwr.app import ArrayRecord, ConfigRecord, RecordDict

LAYOUT_KEY = "pack-layout"
ARRAYS_KEY = "arrays"


def pack(state: dict[str, torch.Tensor]) -> tuple[OrderedDict, str]:
    """``state`` → ``({"packed.<dtype>": flat tensor [N_dtype]}, layout JSON)``.

    The layout lists ``[key, dtype, shape]`` in ``state``'s order; each dtype's flat tensor
    is the concatenation of that dtype's tensors, flattened, in that order.
    """
    layout, groups = [], OrderedDict()
    for key, t in state.items():
        t = t.detach()
        dt = str(t.dtype).removeprefix("torch.")
        layout.append([key, dt, list(t.shape)])
        groups.setdefault(dt, []).append(t.reshape(-1))
    packed = OrderedDict((f"packed.{dt}", torch.cat(ts)) for dt, ts in groups.items())
    return packed, json.dumps(layout)


def unpack(packed: dict[str, torch.Tensor], layout: str) -> OrderedDict:
    """Inverse of :func:`pack`: ``OrderedDict`` of the original keys, shapes and dtypes.

    Raises:
        ValueError: the packed tensors do not hold exactly what the layout describes.
    """
    offsets: dict[str, int] = {}
    out = OrderedDict()
    for key, dt, shape in json.loads(layout):
        flat = packed.get(f"packed.{dt}")
        if flat is None:
            raise ValueError(f"packed arrays lack 'packed.{dt}' for {key!r}")
        n = 1
        for s in shape:
            n *= int(s)
        start = offsets.get(dt, 0)
        if start + n > flat.numel():
            raise ValueError(f"packed arrays too short for {key!r} ({dt}, shape {shape})")
        out[key] = flat[start:start + n].reshape(shape).clone()
        offsets[dt] = start + n
    for name, flat in packed.items():
        if flat.numel() != offsets.get(name.removeprefix("packed."), 0):
            raise ValueError(f"packed array {name!r} holds {flat.numel()} values, the layout "
                             f"{offsets.get(name.removeprefix('packed.'), 0)}")
    return out


def pack_content(content: RecordDict) -> bool:
    """Pack ``content["arrays"]`` in place (if there and not packed yet); ``True`` if packed."""
    if ARRAYS_KEY not in content or LAYOUT_KEY in content:
        return False
    record = content[ARRAYS_KEY]
    if not isinstance(record, ArrayRecord) or len(record) == 0:
        return False
    packed, layout = pack(record.to_torch_state_dict())
    content[ARRAYS_KEY] = ArrayRecord(packed)
    content[LAYOUT_KEY] = ConfigRecord({"layout": layout})
    return True


def unpack_content(content: RecordDict) -> bool:
    """Undo :func:`pack_content` in place; ``True`` if ``content`` was packed."""
    if LAYOUT_KEY not in content:
        return False
    layout = str(content[LAYOUT_KEY]["layout"])
    state = unpack(content[ARRAYS_KEY].to_torch_state_dict(), layout)
    content[ARRAYS_KEY] = ArrayRecord(state)
    del content[LAYOUT_KEY]
    return True
