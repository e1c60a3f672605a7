"""The paper's Table 2 (the compact EfficientNet classifiers B(phi)): as reported, and as computed here."""

from __future__ import annotations

import math

#: Which of the paper's Table 2 columns a sweep's data corresponds to.
TABLE2_DATASETS = ("cifar100", "imagenet2012")


def table2_reported_points(dataset: str = "cifar100"):
    """The paper's Table 2 as reported, for one dataset: model, phi, resolution, params, macs, top1 (fraction).

    Rows whose top-1 is not legible in the paper (B-3) keep top1 = NaN. The "FLOPs" column is
    multiply-accumulates (see `efficienthrnet.complexity`).
    """
    import pandas as pd

    from efficienthrnet.complexity import AS_REPORTED_CLASSIFIERS

    if dataset not in TABLE2_DATASETS:
        raise ValueError(f"Table 2 reports {TABLE2_DATASETS}, not {dataset!r}")
    prefix = "cifar100" if dataset == "cifar100" else "imagenet"
    rows = []
    for r in AS_REPORTED_CLASSIFIERS.values():
        top1 = getattr(r, f"{prefix}_top1")
        rows.append(
            {
                "model": r.model,
                "phi": float(r.phi),
                "resolution": r.resolution,
                "params": getattr(r, f"{prefix}_params"),
                "macs": r.flops,
                "top1": math.nan if top1 is None else top1 / 100,
                "note": r.note,
            }
        )
    return pd.DataFrame(rows).sort_values("phi").reset_index(drop=True)


def table2_comparison(rule: str = "reference"):
    """Computed params / MACs of B0..B-4 (exact layer walk) beside the paper's Table 2 as reported."""
    import pandas as pd

    from efficienthrnet.complexity import AS_REPORTED_CLASSIFIERS, profile_classifier
    from efficienthrnet.scaling import generate_config

    rows = []
    for phi, r in sorted(AS_REPORTED_CLASSIFIERS.items(), reverse=True):
        cfg = generate_config(phi, rule=rule)
        imagenet, cifar = profile_classifier(cfg, 1000), profile_classifier(cfg, 100)
        rows.append(
            {
                "model": r.model,
                "resolution": cfg.backbone.classifier_resolution,
                "reported_resolution": r.resolution,
                "macs": imagenet.macs,
                "reported_macs": r.flops,
                "params_imagenet": imagenet.params,
                "reported_params_imagenet": r.imagenet_params,
                "params_cifar100": cifar.params,
                "reported_params_cifar100": r.cifar100_params,
                "params_backbone": imagenet.parts["backbone"][0],
                "reported_top1_imagenet": r.imagenet_top1,
                "reported_top1_cifar100": r.cifar100_top1,
            }
        )
    return pd.DataFrame(rows)
