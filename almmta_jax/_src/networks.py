"""The ALM-MTA networks: touch and user embeddings, sequence encoder, mediator, heads.

Every module is a Flax NNX module built as ``Module(..., *, rngs)`` and used
functionally (``nnx.split`` once, ``nnx.merge`` inside plain ``jax.jit`` steps).
Dropout takes an explicit ``dropout_key`` argument (``None`` means evaluation
mode), so a split model carries no RNG state and a step is a pure function.

The layout follows the project design (docs/almmta.md, *Networks*):

* touch embedding ``e_j = sum_f Embed_f(id_jf) + Dense(tfeat_j)``;
* user vector ``s = MLP(x ⊕ Embed(user_id))``;
* encoder: a pre-LN Transformer (default) or a GRU, with ``s`` prepended as an
  always-valid context token, producing ``h_j``;
* mediator ``m_j = MLP_m(h_j)``, un-normalized gates ``a_j = σ(MLP_a([h_j; s]))``
  and the pooled mediator ``M = L^{-1/2} Σ_j mask_j a_j m_j``;
* treatment summary ``z = L^{-1/2} Σ_j mask_j σ(MLP_a'(e_j)) e_j`` (never sees x);
* outcome head ``logit = MLP_f([M; z; s])``, proxy head ``σ(V m_j + v_0)``,
  discriminator ``D(M)`` and the contrastive key / query heads.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from almmta_jax._src.data import JourneyBatch
from almmta_jax._src.deletion import deleted_time_features
from drgrad_jax import loop
from drgrad_jax.models import MLP

ENCODERS = ("attention", "gru")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Sizes of the ALM-MTA networks (defaults of docs/almmta.md, *Networks*).

    Attributes:
      vocab_sizes: number of ids of each touch id field (the columns of
        ``touch_ids``); ids are hashed into ``min(vocab, hash_buckets)`` rows.
      d_x: width of the dense user features ``x``.
      max_len: padded journey length ``L_max`` (the pooling scale and the size
        of the position-from-end table).
      num_proxy: number of proxy channels ``P``.
      num_users: rows of the user-id embedding (0: no user-id embedding).
      d_model: touch / hidden width ``d``.
      d_mediator: mediator width ``d_m``.
      d_contrast: contrastive key / query width ``d_c``.
      user_embed_dim: width of the user-id embedding.
      encoder: ``"attention"`` (pre-LN Transformer) or ``"gru"``.
      num_layers: Transformer layers.
      num_heads: attention heads.
      ffn_dim: Transformer feed-forward width.
      dropout: dropout rate used when a ``dropout_key`` is given.
      hash_buckets: cap on embedding rows per id field (2^18 at scale).
      post_outcome_fields: indices of the ``touch_ids`` columns that are logs
        written after the outcome (e.g. the simulator's ``"leak"`` column). They
        reach the encoder, hence only the mediator branch that the adversary
        watches, and are left out of the treatment summary ``z(t)`` and of the
        contrastive keys (docs/almmta.md, *Networks*). Empty (the default): every
        field reaches every path.
    """

    vocab_sizes: tuple[int, ...]
    d_x: int
    max_len: int
    num_proxy: int = 1
    num_users: int = 0
    d_model: int = 64
    d_mediator: int = 16
    d_contrast: int = 32
    user_embed_dim: int = 8
    encoder: str = "attention"
    num_layers: int = 2
    num_heads: int = 4
    ffn_dim: int = 128
    dropout: float = 0.1
    hash_buckets: int = 2**18
    post_outcome_fields: tuple[int, ...] = ()

    def __post_init__(self):
        if not self.vocab_sizes or any(int(v) < 1 for v in self.vocab_sizes):
            raise ValueError(f"vocab_sizes must be positive ints, got {self.vocab_sizes!r}.")
        post = tuple(self.post_outcome_fields)
        n_fields = len(self.vocab_sizes)
        if len(set(post)) != len(post) or any(
            isinstance(f, bool) or not isinstance(f, (int, np.integer)) or not 0 <= f < n_fields
            for f in post
        ):
            raise ValueError(
                f"post_outcome_fields must be distinct touch_ids columns in [0, {n_fields}), "
                f"got {self.post_outcome_fields!r}."
            )
        object.__setattr__(self, "post_outcome_fields", tuple(int(f) for f in post))
        for name in ("d_x", "max_len", "num_proxy", "d_model", "d_mediator", "d_contrast"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}.")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}."
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}.")

    @classmethod
    def from_batch(cls, *batches: JourneyBatch, **sizes) -> ModelConfig:
        """The ``ModelConfig`` whose data fields are read from journeys.

        ``vocab_sizes`` (per id field, the largest id at a real touch plus one),
        ``d_x``, ``max_len``, ``num_proxy`` and ``num_users`` (the largest user id
        plus one; 0 when every id is 0) come from the batches; pass every split
        the model will see (training and evaluation), so that all their ids
        fit. The network sizes keep their defaults unless given in ``sizes``,
        which may also override a data field (e.g. a larger ``vocab_sizes``
        for ids not seen yet).

        Args:
          *batches: one or more ``JourneyBatch`` es with the same ``d_x``,
            ``max_len``, id fields and proxy channels.
          **sizes: any other ``ModelConfig`` field.

        Returns:
          A ``ModelConfig``.

        Example:
          >>> from almmta_jax.data import ragged_to_batch
          >>> b = ragged_to_batch(offsets=[0, 2, 5], touch_ids=[3, 1, 4, 1, 5],
          ...     timestamp=[0, 3600, 0, 7200, 10800], y=[0, 1], max_len=4)
          >>> c = ModelConfig.from_batch(b, d_model=16)
          >>> c.vocab_sizes, c.d_x, c.max_len, c.num_users, c.d_model
          ((6,), 1, 4, 0, 16)
        """
        if not batches or not all(isinstance(b, JourneyBatch) for b in batches):
            got = [type(b).__name__ for b in batches]
            raise TypeError(f"from_batch takes one or more JourneyBatch es, got {got}.")
        shapes = {
            (b.x.shape[-1], b.touch_ids.shape[-2], b.touch_ids.shape[-1], b.yp.shape[-1])
            for b in batches
        }
        if len(shapes) != 1:
            raise ValueError(
                "from_batch: the batches disagree on (d_x, max_len, id fields, proxy "
                f"channels): {sorted(shapes)}."
            )
        ((d_x, max_len, fields, num_proxy),) = shapes
        vocab = [1] * fields
        top_user = 0
        for b in batches:
            ids = np.where(np.asarray(b.touch_mask)[..., None], np.asarray(b.touch_ids), 0)
            if ids.size:
                vocab = [max(v, int(m) + 1) for v, m in zip(vocab, ids.reshape(-1, fields).max(0))]
            if np.size(b.user_id):
                top_user = max(top_user, int(np.max(b.user_id)))
        found = dict(
            vocab_sizes=tuple(vocab),
            d_x=int(d_x),
            max_len=int(max_len),
            num_proxy=int(num_proxy),
            num_users=top_user + 1 if top_user > 0 else 0,
        )
        return cls(**{**found, **sizes})


def dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout; the identity when ``key`` is None or ``rate`` is 0."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros_like(x))


def _fold(key: jax.Array | None, i: int) -> jax.Array | None:
    return None if key is None else jax.random.fold_in(key, i)


def elu_mlp(in_features: int, widths: Sequence[int], *, rngs: nnx.Rngs) -> MLP:
    """``drgrad_jax.models.MLP`` with ELU between the layers and a linear last layer."""
    return MLP(in_features, widths, activation="elu", activate_last=False, rngs=rngs)


class TouchEmbedding(nnx.Module):
    """``e_j = Dense(tfeat_j) + Σ_f Embed_f(id_jf mod rows_f)``, ``[..., L, F] -> [..., L, d]``.

    Args:
      vocab_sizes: number of ids of each touch id field.
      features: embedding width ``d``.
      hash_buckets: cap on the rows of each table (ids are taken modulo the
        rows); ``None`` keeps one row per id.
      num_time_features: width of ``tfeat``.
      rngs: ``nnx.Rngs``.
    """

    def __init__(
        self,
        vocab_sizes: Sequence[int],
        features: int,
        *,
        hash_buckets: int | None = None,
        num_time_features: int = 3,
        rngs: nnx.Rngs,
    ):
        cap = math.inf if hash_buckets is None else int(hash_buckets)
        self.rows = tuple(int(min(int(v), cap)) for v in vocab_sizes)
        self.tables = nnx.List([nnx.Embed(r, features, rngs=rngs) for r in self.rows])
        self.time = nnx.Linear(num_time_features, features, rngs=rngs)

    def __call__(
        self, touch_ids: jax.Array, tfeat: jax.Array, exclude: Sequence[int] = ()
    ) -> jax.Array:
        """The embedding of every touch, leaving out the id fields named in ``exclude``."""
        e = self.time(tfeat)
        for f, (table, rows) in enumerate(zip(self.tables, self.rows)):
            if f not in exclude:
                e = e + table(jnp.mod(touch_ids[..., f], rows))
        return e


class UserEncoder(nnx.Module):
    """``s = MLP(x ⊕ Embed(user_id))`` in R^d."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.num_users = config.num_users
        width = config.d_x
        if config.num_users > 0:
            self.user_table = nnx.Embed(config.num_users, config.user_embed_dim, rngs=rngs)
            width += config.user_embed_dim
        self.mlp = elu_mlp(width, (config.d_model, config.d_model), rngs=rngs)

    def __call__(self, x: jax.Array, user_id: jax.Array) -> jax.Array:
        if self.num_users > 0:
            x = jnp.concatenate([x, self.user_table(jnp.mod(user_id, self.num_users))], axis=-1)
        return self.mlp(x)


class SelfAttention(nnx.Module):
    """Multi-head scaled dot-product self-attention with a key padding mask."""

    def __init__(self, d: int, num_heads: int, *, rngs: nnx.Rngs):
        self.num_heads = num_heads
        self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
        self.out = nnx.Linear(d, d, rngs=rngs)

    def __call__(self, x: jax.Array, key_mask: jax.Array) -> jax.Array:
        b, n, d = x.shape
        hd = d // self.num_heads
        q, k, v = jnp.split(self.qkv(x).reshape(b, n, 3, self.num_heads, hd), 3, axis=2)
        q, k, v = q[:, :, 0], k[:, :, 0], v[:, :, 0]
        scores = jnp.einsum("bqhc,bkhc->bhqk", q, k) / math.sqrt(hd)
        scores = jnp.where(key_mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
        attn = jax.nn.softmax(scores, axis=-1)
        return self.out(jnp.einsum("bhqk,bkhc->bqhc", attn, v).reshape(b, n, d))


class TransformerEncoder(nnx.Module):
    """Bidirectional pre-LN Transformer over ``[s; e_1..e_L]`` with position-from-end embeddings."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d = config.d_model
        self.rate = config.dropout
        # Row 0 is the context token; rows 1..L_max are positions-from-end 0..L_max-1.
        self.position = nnx.Embed(config.max_len + 1, d, rngs=rngs)
        self.attn_norms = nnx.List([nnx.LayerNorm(d, rngs=rngs) for _ in range(config.num_layers)])
        self.attns = nnx.List(
            [SelfAttention(d, config.num_heads, rngs=rngs) for _ in range(config.num_layers)]
        )
        self.ffn_norms = nnx.List([nnx.LayerNorm(d, rngs=rngs) for _ in range(config.num_layers)])
        self.ffns = nnx.List(
            [elu_mlp(d, (config.ffn_dim, d), rngs=rngs) for _ in range(config.num_layers)]
        )
        self.final_norm = nnx.LayerNorm(d, rngs=rngs)

    def __call__(self, e, s, keep, dropout_key=None):
        b, l, _ = e.shape
        # Position from the end among the kept touches (docs/almmta.md, *Deleted journeys*).
        from_end = jnp.cumsum(keep[:, ::-1].astype(jnp.int32), axis=1)[:, ::-1] - 1
        pos = jnp.concatenate(
            [
                jnp.zeros((b, 1), jnp.int32),
                1 + jnp.clip(from_end, 0, self.position.num_embeddings - 2),
            ],
            axis=1,
        )
        x = jnp.concatenate([s[:, None, :], e], axis=1) + self.position(pos)
        key_mask = jnp.concatenate([jnp.ones((b, 1), bool), keep], axis=1)
        for i, (n1, attn, n2, ffn) in enumerate(
            zip(self.attn_norms, self.attns, self.ffn_norms, self.ffns)
        ):
            x = x + dropout(attn(n1(x), key_mask), self.rate, _fold(dropout_key, 2 * i))
            x = x + dropout(ffn(n2(x)), self.rate, _fold(dropout_key, 2 * i + 1))
        return self.final_norm(x)[:, 1:]


class GRUEncoder(nnx.Module):
    """A GRU over the kept touches, started from the context vector ``s``."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.rate = config.dropout
        self.cell = nnx.GRUCell(config.d_model, config.d_model, rngs=rngs)

    def __call__(self, e, s, keep, dropout_key=None):
        e = dropout(e, self.rate, dropout_key)

        def body(h, inputs):
            e_t, keep_t = inputs
            h_new, _ = self.cell(h, e_t)
            h = jnp.where(keep_t[:, None], h_new, h)
            return h, h

        _, hs = jax.lax.scan(body, s, (jnp.swapaxes(e, 0, 1), jnp.swapaxes(keep, 0, 1)))
        return jnp.swapaxes(hs, 0, 1)


class Encoded(NamedTuple):
    """Everything one forward pass through the shared part of ALM-MTA produces.

    Attributes:
      e: ``[B, L, d]`` touch embeddings without the post-outcome fields (what
        ``z(t)`` and the contrastive keys read; the encoder reads every field).
      s: ``[B, d]`` user vectors.
      h: ``[B, L, d]`` encoder outputs.
      mediators: ``[B, L, d_m]`` per-touch mediators ``m_j``.
      gates: ``[B, L]`` un-normalized mediator gates ``a_j`` (0 where not kept).
      mediator: ``[B, d_m]`` pooled mediator ``M``.
      treatment: ``[B, d]`` treatment summary ``z(t)``.
      keep: ``[B, L]`` bool, the touches actually present.
    """

    e: jax.Array
    s: jax.Array
    h: jax.Array
    mediators: jax.Array
    gates: jax.Array
    mediator: jax.Array
    treatment: jax.Array
    keep: jax.Array


class ALMMTA(nnx.Module):
    """The ALM-MTA network: backbone, mediator branch, outcome head, adversary, contrastive heads.

    The outcome probability of the factual (``ipw_simple``) reading is
    ``g(x, t) = σ(MLP_f([M(x,t); z(t); s(x)]))`` (docs/almmta.md, *Front-door
    marginalization*); deleting touch ``j`` removes it from attention and from both gated sums, so
    ``g(x,t) − g(x, t∖τ_j)`` is the deletion uplift Δ_j.

    Args:
      config: a ``ModelConfig``.
      rngs: ``nnx.Rngs`` used for initialization only.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> cfg = ModelConfig(vocab_sizes=(10,), d_x=2, max_len=4, d_model=8, num_heads=2,
      ...                   ffn_dim=8, d_mediator=4, d_contrast=4)
      >>> model = ALMMTA(cfg, rngs=nnx.Rngs(0))
      >>> batch = JourneyBatch(jnp.zeros((3, 2)), jnp.zeros(3, jnp.int32),
      ...     jnp.ones((3, 4, 1), jnp.int32), jnp.zeros((3, 4, 3)), jnp.ones((3, 4), bool),
      ...     jnp.zeros(3), jnp.zeros((3, 4, 1)), jnp.zeros((3, 4), bool), jnp.ones(3))
      >>> model(batch).shape
      (3,)

    References:
      Liu et al., "ALM-MTA: Front-Door Causal Multi-Touch Attribution Method for
      Creator-Ecosystem Optimization", ICLR 2026, https://arxiv.org/abs/2605.08881.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, dm, dc = config.d_model, config.d_mediator, config.d_contrast
        self.config = config
        self.scale = 1.0 / math.sqrt(config.max_len)
        self.touch_embed = TouchEmbedding(
            config.vocab_sizes, config.d_model, hash_buckets=config.hash_buckets, rngs=rngs
        )
        self.user_encoder = UserEncoder(config, rngs=rngs)
        if config.encoder == "attention":
            self.encoder = TransformerEncoder(config, rngs=rngs)
        else:
            self.encoder = GRUEncoder(config, rngs=rngs)
        self.mediator_mlp = elu_mlp(d, (d, dm), rngs=rngs)
        self.mediator_gate = elu_mlp(2 * d, (d, 1), rngs=rngs)
        self.proxy_head = nnx.Linear(dm, config.num_proxy, rngs=rngs)
        self.treatment_gate = elu_mlp(d, (d, 1), rngs=rngs)
        self.outcome_head = elu_mlp(dm + 2 * d, (64, 32, 1), rngs=rngs)
        self.discriminator = elu_mlp(dm, (32, 32, 1), rngs=rngs)
        self.key_head = elu_mlp(d, (d, dc), rngs=rngs)
        self.query_head = elu_mlp(dm + d, (d, dc), rngs=rngs)

    def encode(
        self,
        batch: JourneyBatch,
        keep: jax.Array | None = None,
        dropout_key: jax.Array | None = None,
    ) -> Encoded:
        """Runs the backbone and the mediator branch on ``batch`` restricted to ``keep``.

        Args:
          batch: a ``JourneyBatch`` (only x, user_id, touch_ids, tfeat, touch_mask
            are read).
          keep: optional ``[B, L]`` bool; touches with ``keep=False`` are deleted:
            removed from attention and from the pooled sums, with the positions and
            time features of the journey as logged without them
            (``deleted_time_features``; docs/almmta.md, *Deleted journeys*).
          dropout_key: a PRNG key for training-mode dropout, or ``None``.

        Returns:
          An ``Encoded``.
        """
        check_batch(batch, self.config)
        mask = batch.touch_mask
        tfeat = batch.tfeat
        if keep is None:
            keep = mask
        else:  # the journey as logged without the deleted touches
            keep = jnp.logical_and(mask, keep)
            tfeat = deleted_time_features(tfeat, mask, keep)
        e = self.touch_embed(batch.touch_ids, tfeat)
        s = self.user_encoder(batch.x, batch.user_id)
        h = self.encoder(e, s, keep, _fold(dropout_key, 0))
        post = self.config.post_outcome_fields
        if post:  # post-outcome logs feed the mediator branch only
            e = self.touch_embed(batch.touch_ids, tfeat, exclude=post)
        h = dropout(h, self.config.dropout, _fold(dropout_key, 1))
        mediators = self.mediator_mlp(h)
        s_rep = jnp.broadcast_to(s[:, None, :], h.shape)
        gates = jax.nn.sigmoid(self.mediator_gate(jnp.concatenate([h, s_rep], axis=-1))[..., 0])
        gates = jnp.where(keep, gates, 0.0)
        mediator = self.scale * jnp.einsum("bl,bld->bd", gates, mediators)
        t_gates = jax.nn.sigmoid(self.treatment_gate(e)[..., 0])
        t_gates = jnp.where(keep, t_gates, 0.0)
        treatment = self.scale * jnp.einsum("bl,bld->bd", t_gates, e)
        return Encoded(e, s, h, mediators, gates, mediator, treatment, keep)

    def outcome_logit(self, mediator: jax.Array, treatment: jax.Array, s: jax.Array) -> jax.Array:
        """``MLP_f([M; z; s])`` over any leading axes; returns the logit without its last axis."""
        return self.outcome_head(jnp.concatenate([mediator, treatment, s], axis=-1))[..., 0]

    def proxy_logits(self, mediators: jax.Array) -> jax.Array:
        """Proxy logits ``V m_j + v_0``: ``[..., d_m] -> [..., P]``."""
        return self.proxy_head(mediators)

    def discriminate(self, mediator: jax.Array) -> jax.Array:
        """The adversary's logit of ``y`` from the pooled mediator: ``[..., d_m] -> [...]``."""
        return self.discriminator(mediator)[..., 0]

    def touch_keys(self, e: jax.Array) -> jax.Array:
        """Unit-norm contrastive keys ``k_j = normalize(MLP_k(e_j))``."""
        return normalize(self.key_head(e))

    def query(self, mediator: jax.Array, s: jax.Array) -> jax.Array:
        """Unit-norm contrastive query ``q = normalize(MLP_q([M; s]))``."""
        return normalize(self.query_head(jnp.concatenate([mediator, s], axis=-1)))

    def __call__(self, batch: JourneyBatch, keep: jax.Array | None = None) -> jax.Array:
        """Factual outcome logits ``[B]`` (evaluation mode)."""
        enc = self.encode(batch, keep)
        return self.outcome_logit(enc.mediator, enc.treatment, enc.s)


def normalize(v: jax.Array, eps: float = 1e-12) -> jax.Array:
    """``v / ||v||`` along the last axis (``||v||^2`` floored at ``eps``)."""
    return v * jax.lax.rsqrt(jnp.maximum(jnp.sum(v * v, axis=-1, keepdims=True), eps))


def check_model(model, fn: str) -> None:
    """Checks that ``fn``'s ``model`` argument is a network, saying how to get one from a run.

    Raises:
      TypeError: ``model`` is a ``Trainer``, a ``TrainState`` or anything else
        that is not an ``nnx.Module`` with a ``ModelConfig``; the message says
        to pass ``trainer.model(state)``.
    """
    if isinstance(model, nnx.Module) and isinstance(getattr(model, "config", None), ModelConfig):
        return
    how = (
        "pass the trained network, trainer.model(state), e.g. "
        f"state, _ = trainer(key); {fn}(trainer.model(state), batch)"
    )
    if isinstance(model, loop.Trainer):
        raise TypeError(f"{fn} takes the trained ALMMTA network, not the Trainer: {how}.")
    if isinstance(model, tuple) and "params" in getattr(model, "_fields", ()):
        raise TypeError(
            f"{fn} takes the trained ALMMTA network, not a {type(model).__name__}: {how}."
        )
    raise TypeError(
        f"{fn}'s model must be an ALMMTA network; got {type(model).__name__}. "
        f"After training, {how}."
    )


def check_batch(batch: JourneyBatch, config: ModelConfig) -> None:
    """Checks a ``JourneyBatch`` against a ``ModelConfig`` at trace time.

    Raises:
      TypeError: ``batch`` is not a ``JourneyBatch`` or an id field is not integer.
      ValueError: a field's shape disagrees with the others or with ``config``.
    """
    if not isinstance(batch, JourneyBatch):
        raise TypeError(f"batch must be a JourneyBatch, got {type(batch).__name__}.")
    ids = batch.touch_ids
    if jnp.ndim(ids) != 3:
        raise ValueError(f"batch.touch_ids must be [B, L, F]; got shape {jnp.shape(ids)}.")
    b, l, f = ids.shape
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"batch.touch_ids must be integer; got dtype {ids.dtype}.")
    if f != len(config.vocab_sizes):
        raise ValueError(
            f"batch.touch_ids has {f} id fields (shape {ids.shape}) but config.vocab_sizes "
            f"declares {len(config.vocab_sizes)}."
        )
    if l > config.max_len:
        raise ValueError(
            f"batch.touch_ids has L={l} (shape {ids.shape}) > config.max_len={config.max_len}."
        )
    expected = {
        "x": (b, config.d_x),
        "user_id": (b,),
        "tfeat": (b, l, 3),
        "touch_mask": (b, l),
    }
    for name, shape in expected.items():
        got = tuple(jnp.shape(getattr(batch, name)))
        if got != shape:
            raise ValueError(f"batch.{name} has shape {got}; expected {shape}.")
    if batch.touch_mask.dtype != jnp.bool_:
        raise TypeError(f"batch.touch_mask must be bool; got dtype {batch.touch_mask.dtype}.")


def check_targets(batch: JourneyBatch, config: ModelConfig) -> None:
    """Checks the supervised fields (y, yp, yp_mask, ipw) of a training batch."""
    b, l = batch.touch_mask.shape
    expected = {
        "y": (b,),
        "yp": (b, l, config.num_proxy),
        "yp_mask": (b, l),
        "ipw": (b,),
    }
    for name, shape in expected.items():
        got = tuple(jnp.shape(getattr(batch, name)))
        if got != shape:
            raise ValueError(f"batch.{name} has shape {got}; expected {shape}.")
