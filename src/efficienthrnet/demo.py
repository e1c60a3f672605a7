"""`make demo`: the main job on the embedded default (synthetic data, CPU-sized)."""

from __future__ import annotations

import sys

from .scaling import generate_config


def main() -> int:
    print("phi   input  HR widths              modules")
    for phi in (0, -1, -2, -2.5, -3, -4):
        cfg = generate_config(phi)
        print(f"{phi:<5g} {cfg.input_size:<6d} {str(cfg.hrnet.branch_widths):<22} {cfg.hrnet.modules_per_stage}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
