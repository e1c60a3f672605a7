"""The README's first Python example runs and says what it prints."""

import re
from pathlib import Path

import efficienthrnet

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_scaling_example_runs_as_written():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    example = blocks[0]
    assert "generate_config(phi=-2.5)" in example
    namespace: dict = {}
    exec(example, namespace)  # noqa: S102 - the README's own code
    cfg = namespace["cfg"]
    # the values the README's comments promise
    assert (cfg.input_size, cfg.hrnet.branch_widths) == (416, (19, 37, 74, 147))
    assert cfg.hrnet.modules_per_stage == (1, 1, 3)
    assert namespace["cfg2"] == cfg
    assert namespace["h4"].hrnet.branch_widths == (14, 27, 54, 107)


def test_package_exports_config_and_profile():
    cfg = efficienthrnet.generate_config(-4, rule="reference")
    assert isinstance(cfg, efficienthrnet.ModelConfig)
    assert efficienthrnet.profile(cfg).params == 2_764_706
