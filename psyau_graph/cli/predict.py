"""``psyau predict``: emotion and AU probabilities for one clip (frames folder or video)."""
from __future__ import annotations

import argparse

from ._compute import add_compute_args, check_compute_args


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", help="predict the emotion and AUs of one clip",
                              description="Run the preprocessing pipeline on one clip (onset and apex frame "
                                          "numbers) and print the model's emotion probabilities and the "
                                          "probabilities of the 12 AUs.")
    p.add_argument("--checkpoint", required=True, help="model checkpoint (model.pt from `psyau train`)")
    p.add_argument("--frames", required=True, help="folder of frame images, or a video file")
    p.add_argument("--onset", type=int, required=True, help="onset frame number")
    p.add_argument("--apex", type=int, required=True, help="apex frame number")
    p.add_argument("--flow", default=None, choices=["tvl1", "dis", "farneback"],
                   help="optical-flow method (default: the one the training cache used, else tvl1)")
    p.add_argument("--apex-window", type=int, default=1, help="± frames averaged around the apex (default: 1)")
    p.add_argument("--face-box", default="largest", metavar="CHOICE",
                   help="which face of the onset frame: 'largest' (default), 'centre' (nearest the frame "
                        "centre) or 'LEFT,TOP,RIGHT,BOTTOM' in pixels")
    p.add_argument("--first-frame", type=int, default=0,
                   help="number of a video's first frame, to match your onset/apex (default: 0)")
    p.add_argument("--no-seek", action="store_true",
                   help="video: read frames sequentially from the start instead of seeking (for containers "
                        "whose seeking is unreliable; still keeps only the frames needed)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_compute_args(p)
    p.set_defaults(_run=run)
    return p


def predict_features(model, rois, flow28, *, beta=None, device="cpu", precision: str = "fp32") -> dict:
    """Probabilities for one clip's features (the model runs on ``device`` under ``precision``).

    Shapes:
        rois: (65, 3, 5, 5); flow28: (3, 28, 28). Returns ``{"emotion": (C,), "au": (12,) | None}`` numpy.
    """
    import torch

    r = torch.as_tensor(rois, dtype=torch.float32)
    f = torch.as_tensor(flow28, dtype=torch.float32)
    if r.dim() != 4 or f.dim() != 3:
        raise ValueError(f"expected rois (65, 3, 5, 5) and flow28 (3, 28, 28), got {tuple(r.shape)}, {tuple(f.shape)}")
    from psyau_graph.train.precision import autocast

    model.eval()
    with torch.no_grad(), autocast(precision, device):
        out = model(r[None].to(device), f[None].to(device), beta=beta)
    au = out.au_gat if getattr(out, "au_gat", None) is not None else getattr(out, "au_afe", None)
    return {"emotion": torch.softmax(out.logits[0].float(), -1).cpu().numpy(),
            "au": None if au is None else torch.sigmoid(au[0].float()).cpu().numpy()}


def run(args) -> int:
    import json

    from psyau_graph.au import AU_NAMES, AUS
    from psyau_graph.preprocess.frames import open_clip
    from psyau_graph.preprocess.landmarks import parse_face_box
    from psyau_graph.preprocess.pipeline import preprocess_clip
    from psyau_graph.train.checkpoint import build_model

    check_compute_args(args)
    face = parse_face_box(args.face_box, what="--face-box")
    model, ck = build_model(args.checkpoint)
    model.to(args.device)
    method = args.flow or ck.get("flow_method") or "tvl1"
    # bad folder / video / frame numbers, no face: PsyauError or OSError -> one line, exit 2 (cli.main)
    clip = open_clip(args.frames, first_number=args.first_frame, seek=not args.no_seek)
    flow_params = {"device": args.device} if method == "tvl1" and args.device != "cpu" else None
    feats = preprocess_clip(clip, args.onset, args.apex, flow=method, apex_window=args.apex_window, face=face,
                            flow_params=flow_params)
    probs = predict_features(model, feats.rois, feats.flow28, beta=ck.get("beta"), device=args.device,
                             precision=args.precision)
    names = list(ck.get("class_names") or [str(i) for i in range(len(probs["emotion"]))])
    result = {
        "frames": str(args.frames), "onset": args.onset, "apex": args.apex, "flow_method": method,
        "face_box": list(feats.face_box), "face_selection": feats.face_selection, "notes": feats.notes,
        "device": args.device, "precision": args.precision,
        "prediction": names[int(probs["emotion"].argmax())],
        "emotion": {n: float(p) for n, p in zip(names, probs["emotion"])},
        "au": None if probs["au"] is None else {f"AU{a}": float(p) for a, p in zip(AUS, probs["au"])},
    }
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"clip {args.frames}  onset {args.onset}  apex {args.apex}  flow {method}")
    print(f"face: {feats.face_selection}")
    print(f"predicted emotion: {result['prediction']}")
    for n, p in sorted(result["emotion"].items(), key=lambda kv: -kv[1]):
        print(f"  {n:<12} {p:.3f}")
    if result["au"] is None:
        print("this model has no AU head (ablation without AU detection)")
    else:
        print("action units (probability; present if >= 0.5):")
        for a, p in zip(AUS, probs["au"]):
            print(f"  AU{a:<3} {AU_NAMES[a]:<22} {p:.3f}{'  *' if p >= 0.5 else ''}")
    return 0
