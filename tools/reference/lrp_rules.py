"""The LRP propagation rules of the fiedler methods spec (§D), written from the spec in plain torch.

No third-party LRP code is used. Each rule takes the forward's inputs of one op and the relevance
R at its output, and returns the relevance at its inputs. Relevance sums are per sample: the
leading axis of every tensor is the batch, and the add rule's rescale uses sums over each sample
(with one sample, as the research code runs, that is the whole tensor).

    sdiv(a, b)      = a / (b + 1e-9) where b != 0, else 0 (and 1e-9 when b + 1e-9 == 0)
    linear (z+)     Z = x+ W+^T + x- W-^T (bias ignored; alpha = 1, beta = 0), S = sdiv(R, Z),
                    R_x = x+ (S W+) + x- (S W-)
    matmul Z = P Q  S = sdiv(R, Z), R_P = P * (S Q^T), R_Q = Q * (P^T S)   (callers halve both)
    add Z = X0 + X1 S = sdiv(R, Z), a = X0 S, b = X1 S; then per sample a gets |sum a| / (|sum a| +
                    |sum b|) of sum R and b the rest: a *= sdiv(a_fact, sum a), b likewise
    clone           R_x = x * sum_i sdiv(R_i, x)
    identity        LayerNorm, GELU, tanh, softmax, dropout

`conservation()` checks, rule by rule, that the relevance entering equals the relevance leaving.
`hand_example()` runs a two-layer network whose relevances are worked out by hand in the comments.
"""

from __future__ import annotations

import torch

EPS = 1e-9


def sdiv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    den = b + EPS
    den = torch.where(den == 0, torch.full_like(den, EPS), den)
    return torch.where(b != 0, a / den, torch.zeros_like(a))


def linear(x: torch.Tensor, w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """z+ rule for y = x W^T (+ b, ignored): x [..., in], w [out, in], r [..., out]."""
    xp, xn = x.clamp(min=0), x.clamp(max=0)
    wp, wn = w.clamp(min=0), w.clamp(max=0)
    s = sdiv(r, xp @ wp.T + xn @ wn.T)
    return xp * (s @ wp) + xn * (s @ wn)


def matmul(p: torch.Tensor, q: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient x input for Z = P Q (batched over leading axes); each part carries about R."""
    s = sdiv(r, p @ q)
    return p * (s @ q.transpose(-1, -2)), q * (p.transpose(-1, -2) @ s)


def per_sample_sum(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape[0], -1).sum(1).reshape((-1,) + (1,) * (t.dim() - 1))


def add(x0: torch.Tensor, x1: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = sdiv(r, x0 + x1)
    a, b = x0 * s, x1 * s
    sa, sb, sr = per_sample_sum(a), per_sample_sum(b), per_sample_sum(r)
    a_fact = sdiv(sa.abs(), sa.abs() + sb.abs()) * sr
    b_fact = sdiv(sb.abs(), sa.abs() + sb.abs()) * sr
    return a * sdiv(a_fact, sa), b * sdiv(b_fact, sb)


def clone(x: torch.Tensor, rs: list[torch.Tensor]) -> torch.Tensor:
    return x * sum(sdiv(r, x) for r in rs)


# ----------------------------------------------------------------------------------------------
# checks


def conservation(seed: int = 0, dtype=torch.float64) -> dict[str, float]:
    """Relative conservation error |sum in - sum out| / sum |out| of every rule on random inputs.

    Known leaks: none of these rules leaks beyond the 1e-9 stabiliser, because the linear rule
    ignores the bias by construction (its Z has no bias term) and the matmul rule's two parts each
    carry R (so halving both conserves their total)."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    errs = {}

    def rel(a, b):
        return float((a - b).abs().max() / b.abs().max())

    x, w, r = rnd(2, 5, 7), rnd(4, 7), rnd(2, 5, 4)
    errs["linear"] = rel(per_sample_sum(linear(x, w, r)), per_sample_sum(r))
    p, q, r = rnd(2, 3, 5, 6).softmax(-1), rnd(2, 3, 6, 4), rnd(2, 3, 5, 4)
    rp, rq = matmul(p, q, r)
    errs["matmul.P"] = rel(per_sample_sum(rp), per_sample_sum(r))
    errs["matmul.Q"] = rel(per_sample_sum(rq), per_sample_sum(r))
    x0, x1, r = rnd(2, 5, 7), rnd(2, 5, 7), rnd(2, 5, 7)
    a, b = add(x0, x1, r)
    errs["add"] = rel(per_sample_sum(a + b), per_sample_sum(r))
    x, r1, r2, r3 = rnd(2, 5, 7), rnd(2, 5, 7), rnd(2, 5, 7), rnd(2, 5, 7)
    errs["clone"] = rel(per_sample_sum(clone(x, [r1, r2, r3])), per_sample_sum(r1 + r2 + r3))
    for k, e in errs.items():
        assert e < 1e-7, (k, e)
    return errs


def hand_example() -> dict:
    """Two linear layers, one input sample, every number worked out by hand.

        x = (1, -2)
        layer 1: W1 = [[1, 2], [-1, 1]]         h = W1 x = (1·1 + 2·(-2), -1·1 + 1·(-2)) = (-3, -3)
                 positive contributions only:   Z1 = (1·1 + 0, 0 + 0) = (1, 0)  (w+x+: 1·1; w-x-: none
                 for row 0 since w02 = 2 > 0 and x1 < 0 -> negative; row 1: -1·1 < 0, 1·(-2) < 0)
        layer 2: W2 = [[2, -1]], input h = (-3, -3)
                 y = 2·(-3) + (-1)·(-3) = -3;   Z2 = w-x-: (-1)·(-3) = 3
        one-hot at the output: R_y = 1
        layer 2 back: S = 1/3, R_h = (0, (-3)·(-1)·(1/3)) = (0, 1)
        layer 1 back: S = (0/1, 1/0 -> 0) = (0, 0), so R_x = (0, 0): the relevance of h1 has no
                 positive contribution to flow into and is lost (a known leak of the z+ rule when
                 every contribution to a unit is negative).
        Through an add instead: u = (1, 3), v = (1, -1), R = (2, 2) on u + v = (2, 2)
                 S = (1, 1), a = (1, 3), b = (1, -1); sum a = 4, sum b = 0, sum R = 4
                 a gets 4/4 · 4 = 4 -> a · 4/4 = (1, 3); b gets 0 -> b · sdiv(0, 0) = (0, 0)
        Through the attention matmul: P = [[0.25, 0.75]], V = [[2], [4]], Z = 0.25·2 + 0.75·4 = 3.5
                 R = 7: S = 2, R_P = P · (S V^T) = (0.25·4, 0.75·8) = (1, 6), R_V = V · (P^T S) =
                 (2·0.5, 4·1.5) = (1, 6); halved: R_P = (0.5, 3), R_V = (0.5, 3)
    """
    d = torch.float64
    x = torch.tensor([[1.0, -2.0]], dtype=d)
    w1 = torch.tensor([[1.0, 2.0], [-1.0, 1.0]], dtype=d)
    w2 = torch.tensor([[2.0, -1.0]], dtype=d)
    h = x @ w1.T
    assert torch.equal(h, torch.tensor([[-3.0, -3.0]], dtype=d))
    r_h = linear(h, w2, torch.tensor([[1.0]], dtype=d))
    assert torch.allclose(r_h, torch.tensor([[0.0, 1.0]], dtype=d), atol=1e-8), r_h
    r_x = linear(x, w1, r_h)
    assert torch.allclose(r_x, torch.zeros(1, 2, dtype=d), atol=1e-8), r_x
    a, b = add(torch.tensor([[1.0, 3.0]], dtype=d), torch.tensor([[1.0, -1.0]], dtype=d),
               torch.tensor([[2.0, 2.0]], dtype=d))
    assert torch.allclose(a, torch.tensor([[1.0, 3.0]], dtype=d), atol=1e-8), a
    assert torch.equal(b, torch.zeros(1, 2, dtype=d)), b
    rp, rv = matmul(torch.tensor([[0.25, 0.75]], dtype=d), torch.tensor([[2.0], [4.0]], dtype=d),
                    torch.tensor([[7.0]], dtype=d))
    assert torch.allclose(rp / 2, torch.tensor([[0.5, 3.0]], dtype=d), atol=1e-8), rp
    assert torch.allclose(rv / 2, torch.tensor([[0.5], [3.0]], dtype=d), atol=1e-8), rv
    return {"R_h": r_h.tolist(), "R_x": r_x.tolist(), "add": [a.tolist(), b.tolist()],
            "matmul_halved": [(rp / 2).tolist(), (rv / 2).tolist()]}


if __name__ == "__main__":
    print("conservation:", conservation())
    print("hand example:", hand_example())
