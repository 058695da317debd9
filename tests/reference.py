"""Independent, deliberately simple references that the tests compare with.

Nothing here imports the code under test: these are the textbook O(L^2)
formulas, written with numpy in float64.
"""

import numpy as np


def masked_softmax_attention(q, k, v, allowed_LS=None, key_mask_BS=None):
  """Dense softmax attention restricted to a boolean pattern.

  Args:
    q: [B, L, H, D] queries.
    k: [B, S, H, D] keys.
    v: [B, S, H, D] values.
    allowed_LS: optional bool [L, S] (or [B, H, L, S]) pattern; True where
      query l may attend to key s.
    key_mask_BS: optional bool [B, S]; False marks padded keys.

  Returns:
    [B, L, H, D] float64 outputs; a query that sees no key outputs zeros.
  """
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  b, l, h, d = q.shape
  s = k.shape[1]
  logits = np.einsum('blhd,bshd->bhls', q, k) / np.sqrt(d)
  allowed = np.ones((b, h, l, s), bool)
  if allowed_LS is not None:
    allowed &= np.broadcast_to(np.asarray(allowed_LS, bool), (b, h, l, s))
  if key_mask_BS is not None:
    allowed &= np.asarray(key_mask_BS, bool)[:, None, None, :]
  logits = np.where(allowed, logits, -np.inf)
  row_max = logits.max(-1, keepdims=True)
  row_max = np.where(np.isfinite(row_max), row_max, 0.0)
  weights = np.where(allowed, np.exp(logits - row_max), 0.0)
  denom = weights.sum(-1, keepdims=True)
  weights = weights / np.where(denom > 0, denom, 1.0)
  return np.einsum('bhls,bshd->blhd', weights, v)


def causal_pattern(length):
  """Bool [L, L]: query i sees keys j <= i."""
  return np.tril(np.ones((length, length), bool))


def linear_attention(phi_q, phi_k, v, causal, key_mask_BS=None):
  """Naive O(L^2) linear attention: out_i = sum_j a_ij v_j / sum_j a_ij.

  Args:
    phi_q: [B, L, H, M] query features.
    phi_k: [B, S, H, M] key features.
    v: [B, S, H, D] values.
    causal: whether a_ij = 0 for j > i.
    key_mask_BS: optional bool [B, S]; padded keys get a_ij = 0.

  Returns:
    [B, L, H, D] float64 outputs.
  """
  phi_q, phi_k, v = (np.asarray(x, np.float64) for x in (phi_q, phi_k, v))
  a = np.einsum('blhm,bshm->bhls', phi_q, phi_k)
  if causal:
    a = a * causal_pattern(a.shape[-1])[None, None]
  if key_mask_BS is not None:
    a = a * np.asarray(key_mask_BS, np.float64)[:, None, None, :]
  num = np.einsum('bhls,bshd->blhd', a, v)
  den = a.sum(-1).transpose(0, 2, 1)[..., None]
  return num / den
