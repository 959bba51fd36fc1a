r"""The flow-map parameterization of docs/conventions.md §2, in one place.

.. math::
    G_\theta(x, t, s) = \tfrac{s}{t}\,x + \big(1 - \tfrac{s}{t}\big)\,g_\theta(x, t, s),
    \qquad g_\theta(x, t, s) = c_\text{skip}(t)\,x + c_\text{out}(t)\,F_\theta(c_\text{in}(t)\,x, t, s),

so :math:`G_\theta(x, t, t) = x` exactly (also at t = s = 0) and :math:`G_\theta(x, t, 0) =
g_\theta(x, t, 0)` is the one-jump map. :math:`g_\theta(x, t, t) \approx E[X_0 \mid x_t = x]`,
hence the learned velocity :math:`v_\theta(x, t) = (x - g_\theta(x, t, t)) / t`.

Preconditioning from the coupling's second moments (per coordinate) :math:`v_0 = \mathrm{Var}X_0`,
:math:`v_1 = \mathrm{Var}X_1 (+\varepsilon^2)`, :math:`v_{01} = \mathrm{Cov}(X_0, X_1)`, :math:`\bar t = 1 - t`:

.. math::
    V_t = \bar t^2 v_0 + t^2 v_1 + 2 t \bar t v_{01},\quad c_\text{in} = V_t^{-1/2},\quad
    c_\text{skip} = (\bar t v_0 + t v_{01}) / V_t,

and :math:`c_\text{out}` is the standard deviation of the residual :math:`X_0 - c_\text{skip} x_t`.
Both :math:`1 - c_\text{skip}` and :math:`c_\text{out}` vanish linearly at t = 0; we compute
:math:`(1 - c_\text{skip})/t = (t v_1 - \bar t v_0 + (\bar t - t) v_{01}) / V_t` and
:math:`\kappa = c_\text{out}/t = \sqrt{a^2 v_0 + c_\text{skip}^2 v_1 - 2 a c_\text{skip} v_{01}}`,
:math:`a = (t v_1 + \bar t v_{01}) / V_t`, so the velocity
:math:`v_\theta = \tfrac{1 - c_\text{skip}}{t} x - \kappa F_\theta` has no 0/0 at t = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .interpolant import SIGMA_MAX, SIGMA_MIN, log_sigma_clamped
from .validation import as_time, broadcast_time, check_batch, check_order, check_real


@dataclass
class CouplingMoments:
    """Second moments of a coupling, scalars or tensors broadcastable to one sample ``(*D)``.

    ``v0 = Var X0``, ``v1 = Var X1`` (include ε² for a perturbed source), ``v01 = Cov(X0, X1)``.
    """

    v0: Tensor | float = 1.0
    v1: Tensor | float = 1.0
    v01: Tensor | float = 0.0

    @classmethod
    def estimate(
        cls, x0: Tensor, x1: Tensor, eps: float = 0.0, per_coordinate: bool = True
    ) -> CouplingMoments:
        """Estimate from a coupled batch ``(x0, x1)``, ``(B, *D)`` each (B ≥ 2).

        With ``per_coordinate=False`` the moments are averaged over coordinates (one scalar
        each, as EDM's σ_data for images). ``eps`` adds ε² to ``v1``.
        """
        check_batch(x0, name="x0")
        check_batch(x1, tuple(x0.shape[1:]), name="x1")
        if x0.shape[0] != x1.shape[0]:
            raise ValueError(
                f"x0 and x1 need equal batch sizes; got {x0.shape[0]} and {x1.shape[0]}"
            )
        if x0.shape[0] < 2:
            raise ValueError("need at least two pairs to estimate moments")
        eps = check_real(eps, "eps", ge=0.0)
        a = x0.double() - x0.double().mean(0)
        b = x1.double() - x1.double().mean(0)
        v0, v1, v01 = a.pow(2).mean(0), b.pow(2).mean(0), (a * b).mean(0)
        if not per_coordinate:
            v0, v1, v01 = v0.mean(), v1.mean(), v01.mean()
        out = (v0.float(), (v1 + torch.tensor(eps, dtype=torch.float64) ** 2).float(), v01.float())
        if not all(bool(torch.isfinite(v).all()) for v in out):
            raise ValueError(
                "the coupling moments overflow float32 (data or eps beyond about 1e19); "
                "rescale the data"
            )
        return cls(*out)

    def as_tensors(self) -> tuple[Tensor, Tensor, Tensor]:
        return tuple(torch.as_tensor(v, dtype=torch.float32) for v in (self.v0, self.v1, self.v01))


_NO_S = object()  # FlowMapModel._check without an s (velocity)

KAPPA_FLOOR = 1e-4
"""Lower bound on κ = c_out / t (only reached by a deterministic coupling such as X1 = X0)."""


def precondition(t: Tensor, v0: Tensor, v1: Tensor, v01: Tensor) -> dict[str, Tensor]:
    """Coefficients at times ``t`` (already broadcast to ``(B, 1, …)``), each broadcasting to
    ``(B, *D)``: ``c_in``, ``c_skip``, ``c_out``, ``kappa = c_out / t``,
    ``a = (1 − c_skip·(1 − t)) / t`` and ``a_vel = (1 − c_skip) / t``."""
    tb = 1 - t
    var = tb**2 * v0 + t**2 * v1 + 2 * t * tb * v01
    c_skip = (tb * v0 + t * v01) / var
    a = (t * v1 + tb * v01) / var
    # κ² = Var(a X0 − c_skip X1); floored so a (near-)deterministic coupling cannot divide by 0
    kappa = (a**2 * v0 + c_skip**2 * v1 - 2 * a * c_skip * v01).clamp_min(KAPPA_FLOOR**2).sqrt()
    return {
        "c_in": var.rsqrt(),
        "c_skip": c_skip,
        "c_out": t * kappa,
        "kappa": kappa,
        "a": a,
        "a_vel": (t * v1 - tb * v0 + (tb - t) * v01) / var,
    }


class FlowMapModel(nn.Module):
    r"""A network :math:`F_\theta(x, c_t, c_s)` wrapped into :math:`g_\theta`, :math:`G_\theta` and :math:`v_\theta`.

    Args:
        net: module mapping ``(x_in: (B, *D), label_t: (B,), label_s: (B,)) -> (B, *D)``;
            labels are :math:`0.25\log\sigma` with σ clamped to ``[sigma_min, sigma_max]``.
        data_shape: ``D``, the shape of one sample.
        moments: the coupling moments for the preconditioning.
        sigma_min, sigma_max: clamp of the time labels.
        spec: a JSON-able description from which :func:`gctm_mini.models.build_model` can
            rebuild this model (stored in checkpoints).

    With ``bidirectional=True`` (BCM) the map is written in average-velocity form,
    :math:`G_\theta(x, t, s) = x + (s - t)\,\bar u_\theta(x, t, s)` with
    :math:`\bar u_\theta = \tfrac{1 - c_\text{skip}}{t} x - \kappa F_\theta` — algebraically the
    same as the (s/t) form when s ≤ t (:math:`\bar u = (x - g_\theta)/t`) but finite at t = 0, so
    s > t (inversion, data → source) is allowed too.

    The public methods validate their inputs (shapes, finite values, times in [0, 1],
    ``s ≤ t`` unless bidirectional, a floating dtype — cast to the model's — and the model's
    device); the underscored ones (``_g``, ``_G``, ``_velocity``) skip the checks for
    training loops that draw valid times themselves.
    """

    def __init__(
        self,
        net: nn.Module,
        data_shape: tuple[int, ...],
        moments: CouplingMoments | None = None,
        sigma_min: float = SIGMA_MIN,
        sigma_max: float = SIGMA_MAX,
        spec: dict | None = None,
        bidirectional: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.bidirectional = bool(bidirectional)
        self.data_shape = tuple(data_shape)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.spec = spec or {}
        v0, v1, v01 = (moments or CouplingMoments()).as_tensors()
        for name, v in (("v0", v0), ("v1", v1), ("v01", v01)):
            try:
                v = torch.broadcast_to(v, self.data_shape).clone()
            except RuntimeError as err:
                raise ValueError(
                    f"moment {name} of shape {tuple(v.shape)} does not broadcast to {self.data_shape}"
                ) from err
            self.register_buffer(name, v)
        if not all(bool(torch.isfinite(v).all()) for v in (self.v0, self.v1, self.v01)):
            raise ValueError("moments v0, v1, v01 must be finite")
        if bool((self.v0 <= 0).any()) or bool((self.v1 < 0).any()):
            raise ValueError("moments need v0 > 0 and v1 ≥ 0")

    # ----- coefficients --------------------------------------------------------------
    def coefficients(self, t: Tensor, like: Tensor) -> dict[str, Tensor]:
        """Preconditioning coefficients at per-sample ``t: (B,)``, broadcastable to ``like``."""
        return precondition(broadcast_time(t, like), self.v0, self.v1, self.v01)

    def label(self, t: Tensor) -> Tensor:
        r"""Time label :math:`0.25\log\sigma(t)`, σ clamped to ``[sigma_min, sigma_max]``."""
        return 0.25 * log_sigma_clamped(t, self.sigma_min, self.sigma_max)

    # ----- unchecked core ------------------------------------------------------------
    def _g(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        c = self.coefficients(t, x)
        return c["c_skip"] * x + c["c_out"] * self.net(c["c_in"] * x, self.label(t), self.label(s))

    def _avg_velocity(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        c = self.coefficients(t, x)
        return c["a_vel"] * x - c["kappa"] * self.net(c["c_in"] * x, self.label(t), self.label(s))

    def _G(self, x: Tensor, t: Tensor, s: Tensor) -> Tensor:
        if self.bidirectional:
            return x + broadcast_time(s - t, x) * self._avg_velocity(x, t, s)
        r = torch.where(t > 0, s / t.clamp_min(torch.finfo(t.dtype).tiny), torch.ones_like(t))
        r = broadcast_time(r, x)
        return r * x + (1 - r) * self._g(x, t, s)

    def _velocity(self, x: Tensor, t: Tensor) -> Tensor:
        c = self.coefficients(t, x)
        lt = self.label(t)
        return c["a_vel"] * x - c["kappa"] * self.net(c["c_in"] * x, lt, lt)

    def _weights_like(self) -> Tensor:
        """A tensor with the dtype and device of the network's weights (a buffer if none)."""
        return next(self.net.parameters(), self.v0)

    # ----- public, checked -----------------------------------------------------------
    def prepare(self, x: Tensor, name: str = "x") -> Tensor:
        """Check ``x`` as a batch ``(B, *D)`` for this model and return it in the model's dtype.

        Any floating dtype is accepted (float64 from the oracle or NumPy, half precision):
        ``x`` is cast to the dtype of the model's weights, and the public methods return
        their result in ``x``'s own dtype. Integer or complex tensors, a tensor on another
        device, a wrong shape or NaN/inf raise one clear error.
        """
        if not torch.is_tensor(x):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
        ref = self._weights_like()
        if not x.is_floating_point():
            raise TypeError(
                f"{name} must be a floating-point tensor (the model computes in {ref.dtype}); "
                f"got dtype {x.dtype}"
            )
        if x.device != ref.device:
            raise ValueError(
                f"{name} is on {x.device} but the model is on {ref.device}; "
                f"move one of them (e.g. {name}.to({str(ref.device)!r}))"
            )
        check_batch(x, self.data_shape, name)
        if x.dtype == ref.dtype:
            return x
        xm = x.to(ref.dtype)
        if not bool(torch.isfinite(xm).all()):
            raise ValueError(
                f"{name} has values up to {float(x.abs().max()):.3g}, beyond the range of "
                f"{ref.dtype}, in which the model computes"
            )
        return xm

    def _check(self, x: Tensor, t, s=_NO_S):
        x = self.prepare(x)
        t = as_time(t, x.shape[0], x, "t")
        if s is _NO_S:
            return x, t
        s = as_time(s, x.shape[0], x, "s")
        if not self.bidirectional:
            check_order(t, s)
        return x, t, s

    def g(self, x: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """Data predictor :math:`g_\\theta(x, t, s)`; ``x: (B, *D)``, ``t, s`` floats or ``(B,)``.

        Returned in ``x``'s dtype (computed in the model's, see :meth:`prepare`)."""
        xm, t, s = self._check(x, t, s)
        return self._finite(self._g(xm, t, s), x, "g(x, t, s)")

    def G(self, x: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        """Flow map :math:`G_\\theta(x, t, s)` for :math:`0 \\le s \\le t \\le 1` (any s, t if
        bidirectional); ``(B, *D)`` in ``x``'s dtype."""
        xm, t, s = self._check(x, t, s)
        return self._finite(self._G(xm, t, s), x, "G(x, t, s)")

    def velocity(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Learned velocity :math:`v_\\theta(x, t) = (x - g_\\theta(x, t, t)) / t` (finite at t = 0),
        in ``x``'s dtype."""
        xm, t = self._check(x, t)
        return self._finite(self._velocity(xm, t), x, "velocity(x, t)")

    def _finite(self, out: Tensor, x: Tensor, what: str) -> Tensor:
        """``out`` in ``x``'s dtype; ``ValueError`` if it is not finite (an overflow from a
        huge ``x``, a result beyond ``x``'s dtype, or non-finite weights), never NaN/inf."""
        out = out.to(x.dtype)
        if not bool(torch.isfinite(out).all()):
            weights_ok = all(bool(torch.isfinite(p).all()) for p in self.parameters())
            cause = (
                f"|x| up to {float(x.abs().max()):.3g} overflows {out.dtype}"
                if weights_ok
                else "the model's weights hold NaN/inf"
            )
            raise ValueError(f"{what} is not finite: {cause}")
        return out

    def forward(self, x: Tensor, t: Tensor | float, s: Tensor | float) -> Tensor:
        return self.G(x, t, s)
