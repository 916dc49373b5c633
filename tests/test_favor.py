"""Evidence that FAVOR+ random features approach softmax attention, and checks on the other maps."""

import math

import pytest
import torch
import torch.nn.functional as F

from attnlab.exec.features import elu1, favor_features, favor_projection, relu_features

F64 = torch.float64


def _randn(*shape, seed, std=1.0, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen, dtype=F64) * std).to(dtype)


def _unstabilised(x, omega):
    return torch.exp(x @ omega.T - 0.5 * (x * x).sum(-1, keepdim=True)) / math.sqrt(omega.shape[0])


def favor_weights(q, k, omega, *, stabilise=True):
    """Row-normalised phi(q) phi(k)^T with q, k scaled by d**-0.25."""
    scale = q.shape[-1] ** -0.25
    q, k = q * scale, k * scale
    if stabilise:
        phi_q = favor_features(q, omega, is_query=True)
        phi_k = favor_features(k, omega, is_query=False)
    else:
        phi_q, phi_k = _unstabilised(q, omega), _unstabilised(k, omega)
    w = phi_q @ phi_k.transpose(-1, -2)
    return w / w.sum(-1, keepdim=True)


def favor_attention(q, k, v, omega):
    return favor_weights(q, k, omega) @ v


def softmax_attention(q, k, v):
    return torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), dim=-1) @ v


def _qkv(seed, std, *, shape=(2, 2, 32, 16)):
    return (
        _randn(*shape, seed=seed, std=std),
        _randn(*shape, seed=seed + 1, std=std),
        _randn(*shape, seed=seed + 2),
    )


def _mean_error(q, k, v, m, *, orthogonal, seeds):
    exact = softmax_attention(q, k, v)
    errors = []
    for seed in seeds:
        omega = favor_projection(m, q.shape[-1], orthogonal=orthogonal, seed=seed, dtype=F64)
        errors.append((favor_attention(q, k, v, omega) - exact).abs().mean().item())
    return sum(errors) / len(errors)


@pytest.mark.parametrize(("m", "draws"), [(16, 40_000), (64, 20_000)])
def test_lemma2_positive_features_mse_and_unbiased(m, draws):
    # Lemma 2 (Performer), iid case: MSE = exp(|x+y|^2) SM(x,y)^2 (1 - exp(-|x+y|^2)) / m.
    # The estimator is log-normal-like with a heavy tail, so |x+y|^2 (1.7 here) must stay
    # small for `draws` samples to pin the MSE to a few percent.
    x, y = _randn(2, 16, seed=0, std=0.3)
    sq = ((x + y) ** 2).sum().item()
    assert 1.0 < sq < 2.0  # large enough that the exp(|x+y|^2) factor matters
    sm = math.exp((x @ y).item())
    omegas = torch.stack(
        [favor_projection(m, 16, orthogonal=False, seed=s, dtype=F64) for s in range(draws)]
    )
    feats_x = torch.exp(omegas @ x - 0.5 * (x @ x))
    feats_y = torch.exp(omegas @ y - 0.5 * (y @ y))
    estimates = (feats_x * feats_y).mean(-1)

    predicted = math.exp(sq) * sm**2 * (1 - math.exp(-sq)) / m
    measured = ((estimates - sm) ** 2).mean().item()
    assert measured == pytest.approx(predicted, rel=0.15)
    standard_error = math.sqrt(predicted / draws)
    assert abs(estimates.mean().item() - sm) < 4 * standard_error


def test_attention_error_shrinks_like_inverse_sqrt_m():
    # Norms stay moderate (|q| ~ 1.6): the estimator's variance grows like exp(|q + k|^2 / sqrt(d)),
    # and with heavy tails the m^-1/2 rate only shows at very large m.
    q, k, v = _qkv(seed=10, std=0.4)
    ms = (16, 64, 256, 1024)
    errors = [_mean_error(q, k, v, m, orthogonal=False, seeds=range(32)) for m in ms]
    log_m = torch.tensor([math.log(m) for m in ms], dtype=F64)
    log_e = torch.tensor(errors, dtype=F64).log()
    design = torch.stack([log_m, torch.ones_like(log_m)], dim=1)
    slope = torch.linalg.lstsq(design, log_e.unsqueeze(1)).solution[0].item()
    assert -0.75 < slope < -0.3, (slope, errors)
    assert errors[-1] < 0.25 * errors[0], errors


def test_orthogonal_rows_are_orthogonal_within_blocks():
    d = 16
    omega = favor_projection(40, d, orthogonal=True, seed=3, dtype=F64)
    assert omega.shape == (40, d)
    unit = omega / omega.norm(dim=1, keepdim=True)
    for start in range(0, 40, d):
        block = unit[start : start + d]
        gram = block @ block.T
        torch.testing.assert_close(gram, torch.eye(len(block), dtype=F64), atol=1e-12, rtol=0)
    # Rows are rescaled to chi-distributed norms, not left at 1.
    assert omega.norm(dim=1).std() > 0.1


@pytest.mark.parametrize("orthogonal", [True, False])
def test_projection_shape_dtype_and_determinism(orthogonal):
    a = favor_projection(21, 8, orthogonal=orthogonal, seed=5)
    b = favor_projection(21, 8, orthogonal=orthogonal, seed=5)
    c = favor_projection(21, 8, orthogonal=orthogonal, seed=6)
    assert a.shape == (21, 8) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    # The result is a copy: mutating it must not change later calls.
    a.zero_()
    assert torch.equal(favor_projection(21, 8, orthogonal=orthogonal, seed=5), b)


def test_orthogonal_rows_have_gaussian_marginals():
    rows = torch.cat([favor_projection(16, 16, seed=s, dtype=F64) for s in range(400)])
    assert rows.mean().abs() < 0.02
    assert rows.var().item() == pytest.approx(1.0, rel=0.03)
    assert (rows.norm(dim=1) ** 2).mean().item() == pytest.approx(16.0, rel=0.03)


def test_orthogonal_features_beat_iid():
    # Performer's claim: orthogonal random features lower the estimator's error.
    q, k, v = _qkv(seed=10, std=0.4)
    iid = _mean_error(q, k, v, 64, orthogonal=False, seeds=range(100, 132))
    orthogonal = _mean_error(q, k, v, 64, orthogonal=True, seeds=range(100, 132))
    assert orthogonal < 0.95 * iid, (orthogonal, iid)


def test_stabilisation_constants_cancel_after_normalisation():
    q, k, _ = _qkv(seed=20, std=0.5)
    omega = favor_projection(64, 16, dtype=F64)
    stable = favor_weights(q, k, omega)
    plain = favor_weights(q, k, omega, stabilise=False)
    torch.testing.assert_close(stable, plain, atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_stabilised_weights_finite_for_large_inputs(dtype):
    q, k, _ = _qkv(seed=30, std=5.0)
    q, k = q.to(dtype), k.to(dtype)
    weights = favor_weights(q, k, favor_projection(64, 16, dtype=dtype))
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights[..., 0]))


def test_stabilisation_rescues_float32_where_plain_features_fail():
    q, k, _ = _qkv(seed=30, std=10.0)
    q, k = q.float(), k.float()
    omega = favor_projection(64, 16)
    assert not torch.isfinite(favor_weights(q, k, omega, stabilise=False)).all()
    assert torch.isfinite(favor_weights(q, k, omega)).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_elu1_positive_and_equal_to_elu_plus_one(dtype):
    x = torch.linspace(-100, 100, 2001, dtype=dtype, requires_grad=True)
    y = elu1(x)
    assert (y > 0).all()
    torch.testing.assert_close(y, F.elu(x) + 1)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_relu_features_non_negative():
    x = _randn(100, seed=0)
    assert (relu_features(x) >= 0).all()
    torch.testing.assert_close(relu_features(x), x.clamp_min(0))
