"""The paper's tables as reported, not recomputed: the EfficientHRNet rows of Tables 3 and 4
(`AS_REPORTED`) and the compact EfficientNet rows of Table 2 (`AS_REPORTED_CLASSIFIERS`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ReportedPoseModel:
    """One EfficientHRNet row of the paper, as reported (not recomputed).

    `flops` is the paper's "FLOPs" column: in fact multiply-accumulates from a counter that costs
    the transposed conv 4x (see `Profile.paper_macs`). `params` is inflated by the same counter.
    """

    model: str
    phi: int
    input_size: int
    params: float  # Table 3/4 "# Params"
    flops: float  # Table 3/4 "FLOPs" (really MACs, as reported)
    test_dev_ap: float  # Table 3, single-scale test
    test_dev_ap_multiscale: float  # Table 3, multi-scale test
    val_ap: float  # Table 4, COCO val2017
    fps_jetson_nx: float  # Table 4, TensorRT on the Jetson Xavier NX


# The paper's Tables 3 and 4 (reference/000_d900ee25c266dc4b.txt), as reported.
AS_REPORTED: dict[int, ReportedPoseModel] = {
    0: ReportedPoseModel("H0", 0, 512, 23.3e6, 25.6e9, 64.0, 67.1, 64.8, 22.95),
    -1: ReportedPoseModel("H-1", -1, 480, 16.0e6, 14.2e9, 59.1, 62.3, 59.2, 20.43),
    -2: ReportedPoseModel("H-2", -2, 448, 10.3e6, 7.7e9, 52.8, 55.0, 52.9, 24.53),
    -3: ReportedPoseModel("H-3", -3, 416, 6.9e6, 4.2e9, 44.5, 45.5, 44.8, 33.78),
    -4: ReportedPoseModel("H-4", -4, 384, 3.7e6, 2.1e9, 35.5, 39.7, 35.7, 50.96),
}


@dataclass(frozen=True)
class ReportedClassifier:
    """One compact-EfficientNet row of the paper's Table 2, as reported (None: not legible)."""

    model: str
    phi: int
    resolution: int
    flops: float  # "FLOPs" (MACs)
    imagenet_params: float
    imagenet_top1: float | None
    cifar100_params: float
    cifar100_top1: float | None
    note: str = ""


_DERIVED = "top-1 not legible in the table; derived from the drops stated in section 4.1.4 (3.7 and 2.1 points)"
AS_REPORTED_CLASSIFIERS: dict[int, ReportedClassifier] = {
    0: ReportedClassifier("B0", 0, 224, 0.4e9, 5.3e6, 75.0, 4.1e6, 81.9),
    -1: ReportedClassifier("B-1", -1, 195, 0.3e9, 4.5e6, 73.8, 3.5e6, 81.4),
    -2: ReportedClassifier("B-2", -2, 170, 0.2e9, 3.4e6, 71.3, 2.5e6, 79.8, _DERIVED),
    -3: ReportedClassifier("B-3", -3, 147, 0.1e9, 2.8e6, None, 1.9e6, None, "top-1 not legible in the table"),
    -4: ReportedClassifier("B-4", -4, 128, 0.05e9, 1.3e6, 65.6, 1.3e6, 74.3,
                           "ImageNet params 1.3M look copied from the CIFAR column; true 2.06M"),
}
