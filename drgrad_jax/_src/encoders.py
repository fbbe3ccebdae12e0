"""Feature encoders of the multi-task networks: embeddings, and the released per-field MLPs."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from drgrad_jax._src.layers import MLP, activation_fn, check_positive


def check_features(cat, dense, vocab_sizes, num_dense):
    """Raises unless ``cat`` ``[B, F]`` int and ``dense`` ``[B, D]`` match the encoder."""
    f = len(vocab_sizes)
    if cat is None:
        if f:
            raise ValueError(f"cat is None but the model expects {f} categorical fields.")
    elif jnp.ndim(cat) != 2 or cat.shape[1] != f:
        raise ValueError(f"cat has shape {jnp.shape(cat)}; expected [batch, {f}].")
    elif not jnp.issubdtype(cat.dtype, jnp.integer):
        raise TypeError(f"cat must hold integer ids; got dtype {cat.dtype}.")
    if dense is None:
        if num_dense:
            raise ValueError(f"dense is None but the model expects {num_dense} dense features.")
    elif jnp.ndim(dense) != 2 or dense.shape[1] != num_dense:
        raise ValueError(f"dense has shape {jnp.shape(dense)}; expected [batch, {num_dense}].")


class EmbeddingEncoder(nnx.Module):
    """Embeds every categorical field and concatenates the dense features.

    One table holds all fields (row offsets per field), so a lookup is one
    gather: ``h = [E[cat_1 + o_1], ..., E[cat_F + o_F], dense]``.
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        *,
        embed_dim: int = 8,
        rngs: nnx.Rngs,
    ):
        self.vocab_sizes = tuple(check_positive("vocab_sizes entry", v) for v in vocab_sizes)
        self.num_dense = int(num_dense)
        if not self.vocab_sizes and not self.num_dense:
            raise ValueError("the model needs at least one categorical or dense feature.")
        self.offsets = tuple(int(o) for o in np.cumsum((0,) + self.vocab_sizes[:-1]))
        self.embed_dim = check_positive("embed_dim", embed_dim)
        self.table = (
            nnx.Embed(sum(self.vocab_sizes), self.embed_dim, rngs=rngs)
            if self.vocab_sizes
            else None
        )
        self.out_features = len(self.vocab_sizes) * self.embed_dim + self.num_dense

    def __call__(self, cat, dense) -> jax.Array:
        check_features(cat, dense, self.vocab_sizes, self.num_dense)
        parts = []
        if self.vocab_sizes:
            ids = cat + jnp.asarray(self.offsets, cat.dtype)[None, :]
            emb = self.table(ids)
            parts.append(emb.reshape(emb.shape[0], -1))
        if self.num_dense:
            parts.append(dense.astype(jnp.float32))
        return jnp.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


class FieldMLPEncoder(nnx.Module):
    """The released DRGrad Census input network: one small MLP per categorical field.

    ::

      field_f = MLP[dim_f/2, dim_f](onehot_f)        dim_f = vocabulary size of field f
      sparse  = MLP[64, 128](concat_f field_f);      dense = MLP[32](x_dense)
      h       = MLP[128](concat(sparse, dense))      mish after every layer

    The first layer on a one-hot input is computed as an embedding lookup plus
    a bias (the same function, without the one-hot matrix).
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        num_dense: int,
        *,
        sparse_hidden: Sequence[int] = (64, 128),
        dense_hidden: Sequence[int] = (32,),
        out_hidden: Sequence[int] = (128,),
        activation: str = "mish",
        rngs: nnx.Rngs,
    ):
        self.vocab_sizes = tuple(check_positive("vocab_sizes entry", v) for v in vocab_sizes)
        self.num_dense = int(num_dense)
        if not self.vocab_sizes:
            raise ValueError("FieldMLPEncoder needs at least one categorical field.")
        self.activation = activation
        act_init = jax.nn.initializers.glorot_uniform()
        halves = [max(1, v // 2) for v in self.vocab_sizes]
        self.field_embed = nnx.List(
            [nnx.Embed(v, h, rngs=rngs) for v, h in zip(self.vocab_sizes, halves)]
        )
        self.field_bias = nnx.List([nnx.Param(jnp.zeros((h,), jnp.float32)) for h in halves])
        self.field_out = nnx.List(
            [
                nnx.Linear(h, v, kernel_init=act_init, rngs=rngs)
                for v, h in zip(self.vocab_sizes, halves)
            ]
        )
        self.sparse = MLP(sum(self.vocab_sizes), sparse_hidden, activation=activation, rngs=rngs)
        width = self.sparse.out_features
        if self.num_dense:
            self.dense = MLP(self.num_dense, dense_hidden, activation=activation, rngs=rngs)
            width += self.dense.out_features
        else:
            self.dense = None
        self.out = MLP(width, out_hidden, activation=activation, rngs=rngs)
        self.out_features = self.out.out_features

    def __call__(self, cat, dense) -> jax.Array:
        check_features(cat, dense, self.vocab_sizes, self.num_dense)
        act = activation_fn(self.activation)
        fields = []
        for f, (emb, bias, lin) in enumerate(
            zip(self.field_embed, self.field_bias, self.field_out)
        ):
            h = act(emb(cat[:, f]) + bias[...][None, :])
            fields.append(act(lin(h)))
        parts = [self.sparse(jnp.concatenate(fields, axis=1))]
        if self.dense is not None:
            parts.append(self.dense(dense.astype(jnp.float32)))
        return self.out(jnp.concatenate(parts, axis=1))


def make_encoder(encoder, vocab_sizes, num_dense, embed_dim, rngs):
    """``"embed"`` (``EmbeddingEncoder``) or ``"field_mlp"`` (``FieldMLPEncoder``)."""
    if encoder == "embed":
        return EmbeddingEncoder(vocab_sizes, num_dense, embed_dim=embed_dim, rngs=rngs)
    if encoder == "field_mlp":
        return FieldMLPEncoder(vocab_sizes, num_dense, rngs=rngs)
    raise ValueError(f"encoder must be 'embed' or 'field_mlp'; got {encoder!r}.")
