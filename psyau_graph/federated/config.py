"""Federated training configuration (paper defaults, SPEC §8)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

STRATEGIES = ("local", "fedavg", "fedprox", "p-fedprox", "fedrep", "fedas", "ellp")
#: how subjects are dealt to clients: equal subject counts (paper) or near-equal sample counts
BALANCES = ("subjects", "samples")
#: what a P-FedProx client is scored with: its locally trained model, or next round's mixture
PFEDPROX_EVALS = ("local", "mixture")
AGGREGATIONS = ("mean", "median", "trimmed-mean")


@dataclass
class FederatedConfig:
    """One federated experiment.

    Args:
        clients: number of clients K (disjoint subject groups) (default: ``5``, DFME).
        rounds: communication rounds R (default: ``15``; the paper uses 15–40).
        local_epochs: local epochs E per round (default: ``50``).
        strategy: ``"local" | "fedavg" | "fedprox" | "p-fedprox"`` (default: ``"p-fedprox"``).
        mu: proximal weight α4 for FedProx/P-FedProx (default: ``0.001``).
        theta: P-FedProx weight on the client's own model (default: ``0.9``).
        lr: AdamW learning rate (default: ``1e-5``, the paper's FL value).
        weight_decay: AdamW weight decay (default: ``0.01``, PyTorch's AdamW default).
        batch_size: local batch size (default: ``32``).
        train_frac: fraction of each client's samples used for training (default: ``0.7``).
        repeats: number of random 70/30 splits (different seeds) (default: ``10``).
        seed: base seed for model init, partition and splits (default: ``0``).
        min_clients: the quorum: accepted client updates a round needs, else the run stops
            with an error naming the failed clients and the round. ``None`` = every client
            (default); an integer N; or a fraction in (0, 1] of the clients (rounded up).
            See :attr:`quorum`.
        share_bn_stats: share BatchNorm running statistics (default: ``False``, FedBN).
        exclude_prefixes: state-dict prefixes never shared (default: ``()``).
        partition_seed: seed of the subject → client partition (default: ``None`` = ``seed``).
        dp_noise_multiplier: σ of client-level differential privacy; ``0`` = off (default).
            Flower engines, fedavg/fedprox only (see :mod:`psyau_graph.federated.privacy`).
        dp_clipping_norm: L2 clipping norm C of each client's update (default: ``1.0``).
        dp_delta: δ at which ε is reported (default: ``1e-5``).
        precision: local training and evaluation precision, ``"fp32" | "bf16" | "fp16"``
            (see :mod:`psyau_graph.train.precision`) (default: ``"fp32"``).
        device: torch device of local training and evaluation; model states are exchanged
            on the CPU whatever it is (default: ``"cpu"``).
        balance: ``"subjects"`` (default, the paper: equal subject counts per client, so
            sample counts differ) or ``"samples"`` (near-equal sample counts).
        pfedprox_eval: P-FedProx clients are scored with their locally trained model
            Ŵ_i (``"local"``, default, as the authors) or with the next round's start
            θŴ_i + Σω_jŴ_j (``"mixture"``).
        personal_prefixes: FedRep/FedAS/ELLP parameters kept on the client (default:
            ``()`` = the task's classifier head).
        head_epochs: FedRep head epochs per round (default: ``None`` = max(1, E // 5));
            the body gets the remaining E − head_epochs (at least 1).
        align_epochs: FedAS parameter-alignment epochs of the head per round (default: ``1``).
        aggregation: how fedavg/fedprox combine accepted updates: ``"mean"`` (sample-weighted,
            default), ``"median"`` (coordinate-wise) or ``"trimmed-mean"`` (coordinate-wise,
            unweighted); every engine (on Flower: Flower's FedMedian / FedTrimmedAvg).
        trim_fraction: fraction cut at each end by ``"trimmed-mean"`` (default: ``0.2``).
        norm_bound: if > 0, an update whose L2 norm exceeds ``norm_bound`` × the round's
            median update norm is scaled down to that bound (default: ``0`` = off);
            every strategy but local, every engine. Neither combines with DP.
    """

    clients: int = 5
    rounds: int = 15
    local_epochs: int = 50
    strategy: str = "p-fedprox"
    mu: float = 0.001
    theta: float = 0.9
    lr: float = 1e-5
    weight_decay: float = 0.01
    batch_size: int = 32
    train_frac: float = 0.7
    repeats: int = 10
    seed: int = 0
    min_clients: int | float | None = None
    share_bn_stats: bool = False
    exclude_prefixes: tuple[str, ...] = field(default_factory=tuple)
    partition_seed: int | None = None
    dp_noise_multiplier: float = 0.0
    dp_clipping_norm: float = 1.0
    dp_delta: float = 1e-5
    precision: str = "fp32"
    device: str = "cpu"
    balance: str = "subjects"
    pfedprox_eval: str = "local"
    personal_prefixes: tuple[str, ...] = field(default_factory=tuple)
    head_epochs: int | None = None
    align_epochs: int = 1
    aggregation: str = "mean"
    trim_fraction: float = 0.2
    norm_bound: float = 0.0

    def __post_init__(self) -> None:
        self.exclude_prefixes = tuple(self.exclude_prefixes)
        if isinstance(self.personal_prefixes, str):
            raise TypeError("personal_prefixes must be a sequence of prefixes, not a single string")
        self.personal_prefixes = tuple(self.personal_prefixes)
        self.validate()

    def validate(self, num_subjects: int | None = None) -> None:
        """Raise ``ValueError`` naming the bad field; with ``num_subjects`` also check K."""
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if not 0.0 <= self.theta <= 1.0:
            raise ValueError(f"theta must lie in [0, 1], got {self.theta}")
        for name in ("clients", "rounds", "local_epochs", "batch_size", "repeats"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        m = self.min_clients
        if m is not None:
            if isinstance(m, bool) or not isinstance(m, (int, float)):
                raise ValueError(f"min_clients must be None (every client), an integer >= 1 or a "
                                 f"fraction in (0, 1], got {m!r}")
            if isinstance(m, int) and not 1 <= m <= self.clients:
                raise ValueError(f"min_clients must lie in [1, clients={self.clients}], got {m}")
            if isinstance(m, float) and not 0.0 < m <= 1.0:
                raise ValueError(f"min_clients as a fraction must lie in (0, 1], got {m}")
        if self.mu < 0:
            raise ValueError(f"mu must be >= 0, got {self.mu}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 < self.train_frac < 1.0:
            raise ValueError(f"train_frac must lie in (0, 1), got {self.train_frac}")
        if self.dp_noise_multiplier < 0:
            raise ValueError(f"dp_noise_multiplier must be >= 0, got {self.dp_noise_multiplier}")
        if not self.dp_clipping_norm > 0:
            raise ValueError(f"dp_clipping_norm must be > 0, got {self.dp_clipping_norm}")
        if not 0 < self.dp_delta < 1:
            raise ValueError(f"dp_delta must lie in (0, 1), got {self.dp_delta}")
        if self.dp_noise_multiplier > 0 and self.strategy not in ("fedavg", "fedprox"):
            raise ValueError("differential privacy (dp_noise_multiplier > 0) is available for "
                             f"fedavg and fedprox, not {self.strategy!r}")
        from ..train.precision import check_precision
        from ..train.device import check_device

        check_device(self.device)
        check_precision(self.precision, self.device)
        if self.balance not in BALANCES:
            raise ValueError(f"balance must be one of {BALANCES}, got {self.balance!r}")
        if self.pfedprox_eval not in PFEDPROX_EVALS:
            raise ValueError(f"pfedprox_eval must be one of {PFEDPROX_EVALS}, got {self.pfedprox_eval!r}")
        if self.head_epochs is not None and (not isinstance(self.head_epochs, int) or self.head_epochs < 1):
            raise ValueError(f"head_epochs must be an integer >= 1 or None, got {self.head_epochs!r}")
        if not isinstance(self.align_epochs, int) or self.align_epochs < 0:
            raise ValueError(f"align_epochs must be an integer >= 0, got {self.align_epochs!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {self.aggregation!r}")
        if self.aggregation != "mean" and self.strategy not in ("fedavg", "fedprox"):
            raise ValueError(f"aggregation {self.aggregation!r} is available for fedavg and fedprox, "
                             f"not {self.strategy!r}")
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must lie in [0, 0.5), got {self.trim_fraction}")
        if self.norm_bound < 0:
            raise ValueError(f"norm_bound must be >= 0 (0 = off), got {self.norm_bound}")
        if self.dp_noise_multiplier > 0 and (self.aggregation != "mean" or self.norm_bound > 0):
            raise ValueError("differential privacy (dp_noise_multiplier > 0) calibrates its noise to a "
                             "clipped mean: it does not combine with aggregation "
                             f"{self.aggregation!r} / norm_bound {self.norm_bound}")
        if num_subjects is not None and self.clients > num_subjects:
            raise ValueError(f"clients ({self.clients}) exceeds the number of subjects "
                             f"({num_subjects}): clients are disjoint subject groups")

    @property
    def quorum(self) -> int:
        """Accepted client updates a round needs (from :attr:`min_clients`)."""
        return quorum_of(self.min_clients, self.clients)

    @property
    def uses_prox(self) -> bool:
        return self.strategy in ("fedprox", "p-fedprox")

    @property
    def part_seed(self) -> int:
        return self.seed if self.partition_seed is None else self.partition_seed

    def to_dict(self) -> dict:
        d = asdict(self)
        d["exclude_prefixes"] = list(self.exclude_prefixes)
        d["personal_prefixes"] = list(self.personal_prefixes)
        return d


def quorum_of(min_clients: int | float | None, clients: int) -> int:
    """``None`` → ``clients``; an integer → itself; a fraction f → ``ceil(f · clients)``."""
    if min_clients is None:
        return int(clients)
    if isinstance(min_clients, float):
        return max(1, math.ceil(min_clients * clients - 1e-9))
    return int(min_clients)


def parse_min_clients(text: str | int | float | None) -> int | float | None:
    """``"all"``/``""``/None → None, ``"3"`` → 3, ``"0.5"`` → 0.5 (CLI and run-config form)."""
    if text is None or isinstance(text, (int, float)) and not isinstance(text, bool):
        return text
    t = str(text).strip().lower()
    if t in ("", "all", "none"):
        return None
    try:
        return float(t) if any(c in t for c in ".e") else int(t)
    except ValueError:
        raise ValueError(f"min-clients must be 'all', an integer N or a fraction in (0, 1], got {text!r}") from None


def round_seed(seed: int, repeat: int, rnd: int, client: int) -> int:
    """Seed of one client's local training in one round (same in every engine)."""
    return (int(seed) * 1_000_003 + int(repeat) * 10_007 + int(rnd) * 101 + int(client)) % (2**31 - 1)
