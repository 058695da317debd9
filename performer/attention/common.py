"""Input checks and small helpers shared by the attention families."""

import jax
import jax.numpy as jnp


def check_inputs(
  q_BLHD: jax.Array,
  k_BSHD: jax.Array,
  v_BSHD: jax.Array,
  mask_BS: jax.Array | None,
  head_dim: int,
  *,
  same_length: bool = True,
) -> None:
  """Raises ValueError when q, k, v or the mask do not fit together.

  Args:
    q_BLHD: queries [batch, length, heads, head_dim].
    k_BSHD: keys [batch, key_length, heads, head_dim].
    v_BSHD: values, same shape as the keys.
    mask_BS: optional key-padding mask [batch, key_length].
    head_dim: the head dimension the module was built for.
    same_length: whether queries and keys must have the same length (self
      attention; every causal variant needs it).
  """
  for name, x in (('q', q_BLHD), ('k', k_BSHD), ('v', v_BSHD)):
    if x.ndim != 4:
      raise ValueError(
        f'{name} must have shape [batch, length, heads, head_dim], got shape '
        f'{tuple(x.shape)}'
      )
  if k_BSHD.shape != v_BSHD.shape:
    raise ValueError(
      f'k and v must have the same shape, got k {tuple(k_BSHD.shape)} and '
      f'v {tuple(v_BSHD.shape)}'
    )
  b, l, h, d = q_BLHD.shape
  kb, s, kh, kd = k_BSHD.shape
  if (b, h, d) != (kb, kh, kd):
    raise ValueError(
      f'q {tuple(q_BLHD.shape)} and k {tuple(k_BSHD.shape)} must agree in '
      'batch, heads and head_dim'
    )
  if d != head_dim:
    raise ValueError(
      f'head_dim of the inputs is {d} but the module was built with '
      f'head_dim={head_dim}'
    )
  if same_length and l != s:
    raise ValueError(
      f'query length {l} and key length {s} must be equal for this variant'
    )
  if mask_BS is not None and tuple(mask_BS.shape) != (kb, s):
    raise ValueError(
      f'mask must have shape [batch, key_length] = {(kb, s)}, got '
      f'{tuple(mask_BS.shape)}'
    )


def compute_dtype(dtype: jnp.dtype) -> jnp.dtype:
  """The dtype to accumulate in: at least float32."""
  return jnp.promote_types(dtype, jnp.float32)


def pad_axis(x: jax.Array, multiple: int, axis: int) -> jax.Array:
  """Pads `x` with zeros along `axis` up to a multiple of `multiple`."""
  pad = -x.shape[axis] % multiple
  if pad == 0:
    return x
  widths = [(0, 0)] * x.ndim
  widths[axis] = (0, pad)
  return jnp.pad(x, widths)


def key_mask_or_ones(mask_BS: jax.Array | None, b: int, s: int) -> jax.Array:
  """The key-padding mask as bool [B, S]; all True when `mask_BS` is None."""
  if mask_BS is None:
    return jnp.ones((b, s), dtype=bool)
  return mask_BS.astype(bool)


def check_positive_int(name: str, value, *, minimum: int = 1) -> int:
  """Returns `value` when it is an int >= minimum, else raises ValueError."""
  if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
    raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}')
  return value


def check_float(name: str, value, valid: str, ok) -> float:
  """`value` as a float if it is a real number with ok(value), else a
  ValueError "<name> must be a float <valid>, got <value>"."""
  if (
    isinstance(value, bool)
    or not isinstance(value, int | float)
    or not ok(value)
  ):
    raise ValueError(f'{name} must be a float {valid}, got {value!r}')
  return float(value)


def check_choice(name: str, value, valid) -> str:
  """Returns `value` when it is one of `valid`, else raises ValueError."""
  if value not in valid:
    raise ValueError(f'unknown {name} {value!r}; valid: {sorted(valid)}')
  return value


def required_size(variant: str, name: str, value, why: str) -> int:
  """A size option (`max_len`, `num_heads`) that the model fills in.

  Args:
    variant: the registered name, for the message.
    name: the option.
    value: its value; None (not filled in) is an error that says why it is
      needed.
    why: what the variant sizes with it.

  Returns:
    `value`, checked to be an int >= 1.
  """
  if value is None:
    raise ValueError(
      f'{variant} option {name} is required (got None): {why}; give an '
      'int >= 1 (the model fills it in)'
    )
  return check_positive_int(name, value)
