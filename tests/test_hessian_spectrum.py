"""Hessian spectra from products alone, against known answers: a quadratic whose spectrum is chosen, and the
full Hessian of a small net by `curvature.full_hessian`."""

import math

import pytest
import torch
import torch.nn.functional as F

from hw1track.measures import curvature
from hw1track.measures.hessian_spectrum import (HessianOperator, hutchinson_trace, lanczos, spectral_density,
                                                top_eigenvalue)
from hw1track.training.models import mlp, seeded_model

SPECTRUM = torch.cat([torch.linspace(-2.0, 1.0, 40), torch.tensor([3.0, 7.5, 12.0])]).double()


def _quadratic(spectrum=SPECTRUM, seed=0):
    """The Hessian operator of ½θᵀAθ with A = Q diag(spectrum) Qᵀ for a random rotation Q (H = A everywhere)."""
    q, _ = torch.linalg.qr(torch.randn(len(spectrum), len(spectrum), dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(seed)))
    a = q @ torch.diag(spectrum) @ q.T
    theta = torch.randn(len(spectrum), dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 1))
    return HessianOperator(lambda t: 0.5 * t @ a @ t, theta), a


def _generator(seed=0):
    return torch.Generator().manual_seed(seed)


def test_lanczos_quadrature_reproduces_the_probes_moments_exactly():
    """Gauss quadrature with m nodes is exact for powers below 2m: Σ w λ^j = vᵀA^j v. Weights squared from whole
    eigenvectors instead of their first components (PyHessian before 2024) sum to m, not 1: j = 0 fails already."""
    operator, a = _quadratic()
    probe = torch.randn(operator.dim, dtype=torch.float64, generator=_generator(1))
    unit = probe / probe.norm()
    (tridiagonal,) = lanczos(operator, probe.unsqueeze(0), steps=4)
    nodes, weights = tridiagonal.quadrature()
    for power in range(8):
        exact = unit @ torch.linalg.matrix_power(a, power) @ unit
        assert (weights * nodes ** power).sum().item() == pytest.approx(exact.item(), rel=1e-9, abs=1e-12)


def test_top_eigenvalue_of_a_known_spectrum():
    operator, _ = _quadratic()
    top = top_eigenvalue(operator, steps=20, generator=_generator())
    assert top.value == pytest.approx(12.0, abs=max(top.residual, 1e-9))
    assert top.residual < 1e-6 and top.products == 20 == operator.products


def test_lanczos_stops_when_the_krylov_space_is_exhausted():
    operator, _ = _quadratic(torch.tensor([1.0, 1.0, 2.0, 2.0, 5.0], dtype=torch.float64))
    probes = torch.randn(2, 5, dtype=torch.float64, generator=_generator())
    for tridiagonal in lanczos(operator, probes, steps=5):  # three distinct eigenvalues: three steps
        nodes, _ = tridiagonal.quadrature()
        assert torch.allclose(nodes, torch.tensor([1.0, 2.0, 5.0], dtype=torch.float64))
        assert tridiagonal.residual == 0.0


def test_hutchinson_trace_is_unbiased_within_its_standard_error():
    operator, a = _quadratic()
    estimate = hutchinson_trace(operator, probes=400, generator=_generator())
    assert abs(estimate.value - torch.trace(a).item()) < 4 * estimate.standard_error
    assert 0 < estimate.standard_error < 2 and estimate.products == 400


def test_density_moments_estimate_the_spectrums_moments():
    operator, _ = _quadratic()
    density = spectral_density(operator, probes=60, steps=12, generator=_generator())
    assert torch.allclose(density.weights.sum(dim=1), torch.ones(60, dtype=torch.float64))
    assert density.products == 60 * 12
    for power in (1, 2, 3):
        error = density.per_probe_moment(power).std().item() / math.sqrt(60)
        assert abs(density.moment(power) - (SPECTRUM ** power).mean().item()) < 4 * error
    grid = torch.linspace(-5, 15, 2001)
    assert torch.trapezoid(density.smoothed(grid, width=0.3), grid.double()).item() == pytest.approx(1.0, abs=1e-3)


@pytest.fixture(scope="module")
def small_net():
    """A 2-16-16-1 ReLU net fitting a noisy sine on 64 points in float64, and its full Hessian's eigenvalues."""
    generator = _generator(3)
    x = torch.randn(64, 2, generator=generator, dtype=torch.float64)
    y = torch.sin(3 * x[:, :1]) + 0.1 * torch.randn(64, 1, generator=generator, dtype=torch.float64)
    model = seeded_model(lambda: mlp((2, 16, 16, 1)), seed=0).double()
    operator = HessianOperator.of_model(model, F.mse_loss, x, y)
    flat_loss = curvature.loss_of_flat_params(model, F.mse_loss, x, y)
    eigenvalues = curvature.hessian_eigenvalues(curvature.full_hessian(flat_loss, operator.theta))
    return operator, eigenvalues


def test_a_nets_lambda_max_and_trace_agree_with_its_full_hessian(small_net):
    operator, eigenvalues = small_net
    top = top_eigenvalue(operator, steps=60, generator=_generator())
    assert top.value == pytest.approx(eigenvalues[-1].item(), rel=1e-8)
    trace = hutchinson_trace(operator, probes=300, generator=_generator())
    assert abs(trace.value - eigenvalues.sum().item()) < 4 * trace.standard_error


def test_a_nets_density_has_its_full_hessians_moments(small_net):
    operator, eigenvalues = small_net
    density = spectral_density(operator, probes=40, steps=30, generator=_generator())
    for power in (1, 2):
        error = density.per_probe_moment(power).std().item() / math.sqrt(40)
        assert abs(density.moment(power) - (eigenvalues ** power).mean().item()) < 4 * error
    assert density.nodes.max().item() == pytest.approx(eigenvalues[-1].item(), rel=1e-6)
    assert density.nodes.min().item() == pytest.approx(eigenvalues[0].item(), rel=1e-3, abs=1e-6)
