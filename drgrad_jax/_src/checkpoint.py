"""The checkpoint format of the shared training loop: what is recorded, and how it is read back.

A checkpoint is an orbax directory holding the state's arrays (``state/``) and a
JSON signature of the configuration that wrote it (``meta/``): the configuration
fields, the abstract state (shapes, dtypes) and the kinds of its parts.
``Trainer.save`` / ``Trainer.restore`` in ``loop.py`` use these helpers.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

# What ``Trainer.save`` writes: any of the parts marks a (possibly damaged) checkpoint;
# each file is needed to read it back.
_CHECKPOINT_PARTS = ("_CHECKPOINT_METADATA", "meta", "state")
_CHECKPOINT_FILES = {
    "meta/metadata": "the configuration signature",
    "state/_METADATA": "the tree metadata",
    "state/manifest.ocdbt": "the array index",
}
_SIGNATURE_KEYS = ("config", "state", "state_kinds")


def _unreadable_arrays(path: str, saved: dict, error: str) -> str:
    """The message for arrays that fail to read although the metadata is intact."""
    what = "the arrays"
    key = re.search(r"\b(\d{5})/", error)
    if key and int(key.group(1)) < len(saved["state"]):
        what = f"array {key.group(1)} ({saved['state'][int(key.group(1))][0]})"
    msg = f"damaged checkpoint at {path}: the metadata is intact but {what} could not be read"
    data = re.search(r'local file "([^"]*/d/[0-9a-f]+)"', error)
    if data:
        msg += f" from {os.path.relpath(data.group(1), path)}"
    return msg + "; a data file under state/ is missing or corrupt."


def _is_key(x) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def _abstract(tree: Any) -> list[list]:
    out = []
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        if _is_key(x):
            shape = jax.eval_shape(jax.random.key_data, x).shape
            out.append([jax.tree_util.keystr(path), list(shape), "key"])
        else:
            out.append([jax.tree_util.keystr(path), list(np.shape(x)), str(jnp.result_type(x))])
    return out


def _state_kinds(tree: Any) -> list[str]:
    """Class names of the ``NamedTuple`` s inside ``tree`` (which transforms built them)."""
    out = []

    def walk(node, top):
        if isinstance(node, tuple) and hasattr(node, "_fields") and not top:
            out.append(type(node).__name__)
        if isinstance(node, (tuple, list)):
            for x in node:
                walk(x, False)
        elif isinstance(node, dict):
            for x in node.values():
                walk(x, False)

    walk(tree, True)
    return out


def config_signature(config: Any, *, exclude: tuple[str, ...] = ()) -> dict:
    """A frozen-dataclass configuration as the JSON a checkpoint records.

    Every field except those in ``exclude``; nested dataclasses (a model
    configuration) become dicts, and a field holding an optax transformation
    (``optimizer``) is recorded as ``"given"`` (``"default"`` when ``None``),
    since a function has no stable description.

    Example:
      >>> import dataclasses
      >>> @dataclasses.dataclass(frozen=True)
      ... class C:
      ...     lr: float = 0.1
      ...     optimizer: object = None
      >>> config_signature(C())
      {'lr': 0.1, 'optimizer': 'default'}
    """
    out = {}
    for f in dataclasses.fields(config):
        if f.name in exclude:
            continue
        value = getattr(config, f.name)
        if f.name == "optimizer":
            value = "default" if value is None else "given"
        elif dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        out[f.name] = value
    return _jsonable(out)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer, np.floating, np.bool_)):
        return x.item()
    return x
