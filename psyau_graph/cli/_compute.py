"""``--device`` and ``--precision``, shared by the commands that compute."""
from __future__ import annotations

PRECISION_CHOICES = ("fp32", "bf16", "fp16")


def add_compute_args(p, *, precision: bool = True) -> None:
    """Add ``--device`` (and ``--precision``) to the parser ``p``."""
    p.add_argument("--device", default="cpu",
                   help="torch device to compute on: cpu (default), cuda, cuda:N, or auto (cuda:0 where CUDA "
                        "is available, else cpu; the device used is recorded); an unavailable device is an "
                        "error, nothing falls back to the CPU")
    if precision:
        p.add_argument("--precision", default="fp32", choices=PRECISION_CHOICES,
                       help="fp32 (default), bf16 (autocast on CPU or CUDA) or fp16 (CUDA only, with a "
                            "gradient scaler)")


def check_compute_args(args) -> None:
    """Raise ``ValueError`` (the command exits 2) on an unavailable device or a precision it cannot run.

    ``--device auto`` is resolved here: ``args.device`` becomes the device chosen (``"cuda:0"``
    or ``"cpu"``), so everything after this call, and every record of the run, sees it."""
    from psyau_graph.train.device import resolve_device
    from psyau_graph.train.precision import check_precision

    args.device = str(resolve_device(args.device))
    if hasattr(args, "precision"):
        check_precision(args.precision, args.device)
