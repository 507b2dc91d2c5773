r"""Optional client-level differential privacy for the Flower engines.

Mechanism: Flower's :class:`~flwr.serverapp.strategy.DifferentialPrivacyServerSideFixedClipping`
wraps our FedAvg/FedProx strategy. Each round the server clips every client's model
update :math:`\Delta_i = \hat W_i - W^t` to L2 norm :math:`C`, averages the clipped
updates with **equal weights** (clients send ``dp-weight = 1``; sample-count weights would
let one client's weight exceed :math:`1/K` and break the noise calibration), and adds
Gaussian noise of standard deviation :math:`\sigma C / K` to the average.

Accounting: the privacy unit is one client's whole contribution (a lab), neighbouring
relation add/remove-one-client with the denominator fixed at :math:`K` (Flower's noise
calibration), every client takes part in every round (no sampling amplification). Each
round is a Gaussian mechanism with noise multiplier :math:`\sigma`; the R rounds compose
in Rényi DP (:math:`\mathrm{RDP}(\alpha) = R\alpha / (2\sigma^2)`), converted to
:math:`(\varepsilon, \delta)` with Opacus's RDP analysis
(``opacus.accountants.analysis.rdp``). Flower 1.41's own accountant needs the
``dp-accounting`` package, which is not a dependency here.

Not covered: the server sees the unclipped updates (server-side clipping assumes a
trusted server); the evaluation metrics clients report are not privatised; P-FedProx is
not supported (its per-client mixtures are not one noisy aggregate).
"""
from __future__ import annotations

DEFAULT_ORDERS = tuple([1.0 + x / 10.0 for x in range(1, 100)] + list(range(12, 256)))


def dp_epsilon(noise_multiplier: float, rounds: int, delta: float = 1e-5,
               orders=DEFAULT_ORDERS) -> float:
    """ε after ``rounds`` Gaussian releases with noise multiplier ``σ`` at ``δ``.

    Args:
        noise_multiplier: σ (> 0).
        rounds: number of releases R (>= 1).
        delta: δ in (0, 1) (default: ``1e-5``).
        orders: Rényi orders α to optimise over.
    """
    if not noise_multiplier > 0:
        raise ValueError(f"noise_multiplier must be > 0 for a finite epsilon, got {noise_multiplier}")
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    from opacus.accountants.analysis import rdp
    r = rdp.compute_rdp(q=1.0, noise_multiplier=float(noise_multiplier), steps=int(rounds),
                        orders=list(orders))
    eps, _ = rdp.get_privacy_spent(orders=list(orders), rdp=r, delta=float(delta))
    return float(eps)


def wrap_dp(strategy, *, noise_multiplier: float, clipping_norm: float, num_clients: int):
    """Flower's server-side fixed-clipping DP wrapper around ``strategy`` (uniform weights)."""
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping
    if getattr(strategy, "strategy_name", "") == "p-fedprox":
        raise ValueError("differential privacy is available for fedavg and fedprox, not p-fedprox")
    strategy.weighted_by_key = "dp-weight"
    return DifferentialPrivacyServerSideFixedClipping(strategy, noise_multiplier, clipping_norm,
                                                      num_clients)


def privacy_report(noise_multiplier: float, clipping_norm: float, rounds: int, num_clients: int,
                   delta: float = 1e-5) -> dict:
    """What a DP run reports next to its metrics."""
    return {"epsilon": dp_epsilon(noise_multiplier, rounds, delta), "delta": delta,
            "noise_multiplier": noise_multiplier, "clipping_norm": clipping_norm,
            "rounds": rounds, "clients": num_clients,
            "noise_std_on_mean_update": noise_multiplier * clipping_norm / num_clients,
            "unit": "client (a lab's whole contribution), add/remove-one, fixed K, no sampling",
            "mechanism": "Flower DifferentialPrivacyServerSideFixedClipping, uniform FedAvg weights",
            "accountant": "Renyi DP, Gaussian mechanism composed over rounds (opacus rdp analysis)"}
