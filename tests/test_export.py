"""Export of the inference network: StableHLO and ONNX artefacts give the Flax model's maps and people.

The default run exports the smallest phi of the default rule at a small non-square input (64x96);
the slow test covers phi -4, -2, 0 at 128x192, or at each phi's native size with
EFFICIENTHRNET_EXPORT_NATIVE=1 (minutes per phi on a 2-core CPU).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from conftest import COCO_SAMPLE, xla_optimizations_off
from efficienthrnet import export
from efficienthrnet.cli import main
from efficienthrnet.config import ModelConfig
from efficienthrnet.decode import DecodeConfig, decode
from efficienthrnet.nn.model import EfficientHRNet
from efficienthrnet.predict import PredictConfig, Predictor, read_image
from efficienthrnet.scaling import generate_config
from efficienthrnet.sweep import load_spec, run_sweep

PHI = -6  # the smallest phi the default rule allows
SIZE = (64, 96)
RTOL = 1e-4  # parity: max |export - flax| <= RTOL * max |flax|, per output


def _flax_forward(cfg, variables, x):
    """The model as trained and evaluated (CPU depthwise impl, BN not folded)."""
    return jax.jit(lambda v, x: EfficientHRNet(cfg).apply(v, x, train=False))(variables, x)


def _assert_parity(reference, outputs, what):
    assert len(outputs) == len(reference) == 2
    for name, ref, out in zip(("first", "second"), reference, outputs):
        ref, out = np.asarray(ref), np.asarray(out)
        assert out.shape == ref.shape, f"{what} {name}"
        rel = np.abs(out - ref).max() / np.abs(ref).max()
        assert rel <= RTOL, f"{what} {name}: max relative difference {rel:.2e} > {RTOL}"


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """phi -6, random weights with non-trivial BN statistics, one image batch and the Flax maps."""
    cfg = generate_config(PHI)
    variables = export.random_variables(cfg, seed=0)
    x = np.random.default_rng(1).normal(size=(1, *SIZE, 3)).astype(np.float32)
    with xla_optimizations_off():
        reference = _flax_forward(cfg, variables, x)
    return cfg, variables, x, reference, tmp_path_factory.mktemp("export")


@pytest.fixture(scope="module")
def stablehlo_file(small):
    cfg, variables, _, _, folder = small
    # the sub-pixel form of the transposed conv here, one ConvTranspose in the ONNX model
    return export.to_stablehlo(cfg, variables, folder / "model.stablehlo", SIZE, batch="dynamic", deconv="phases")


@pytest.fixture(scope="module")
def onnx_file(small):
    pytest.importorskip("jax2onnx", reason="ONNX export needs the 'export' extra")
    cfg, variables, _, _, folder = small
    return export.to_onnx(cfg, variables, folder / "model.onnx", SIZE)


def test_input_size_not_a_multiple_of_the_stride_is_refused(small):
    cfg = small[0]
    with pytest.raises(ValueError, match=r"70x96 is not a multiple of the network stride 32.*96 96"):
        export.export_shape(cfg, (70, 96), 1)
    with pytest.raises(ValueError, match="batch 0 must be a positive int or 'dynamic'"):
        export.export_shape(cfg, 64, 0)
    assert export.export_shape(cfg, None, "dynamic") == ("dynamic", cfg.input_size, cfg.input_size, 3)


def test_every_batch_norm_is_folded_into_the_conv_before_it(small):
    cfg, variables = small[:2]
    folded = export.fold_batch_norm(cfg, variables)
    num_bn = sum(1 for path in jax.tree_util.tree_flatten_with_path(variables["batch_stats"])[0]
                 if path[0][-1].key == "mean")
    assert num_bn > 50 and folded.folded == num_bn and folded.unfolded == []
    # the stem conv's kernel is scaled per output channel by gamma / sqrt(var + eps)
    bn_p, bn_s = variables["params"]["backbone"]["stem_bn"], variables["batch_stats"]["backbone"]["stem_bn"]
    s = bn_p["scale"] / np.sqrt(bn_s["var"] + cfg.backbone.bn_eps)
    np.testing.assert_allclose(folded.params["backbone"]["stem_conv"]["kernel"],
                               variables["params"]["backbone"]["stem_conv"]["kernel"] * s, rtol=1e-6)


def test_stablehlo_artefact_reloads_with_the_same_maps_and_its_description(small, stablehlo_file):
    cfg, _, x, reference, _ = small
    forward, meta = export.load_stablehlo(stablehlo_file)
    with xla_optimizations_off():
        two = forward(np.concatenate([x, x]))  # a dynamic batch
    assert two[0].shape[0] == 2
    _assert_parity(reference, [out[1:] for out in two], "stablehlo")
    assert meta["input"]["shape"] == ["dynamic", *SIZE, 3]
    assert meta["outputs"]["out2"] == ["dynamic", SIZE[0] // 2, SIZE[1] // 2, cfg.num_keypoints]
    assert ModelConfig.from_dict(meta["model_config"]) == cfg and meta["fold_bn"] is True


def test_onnx_model_in_onnxruntime_gives_the_same_maps(small, onnx_file):
    _, variables, x, reference, _ = small
    session = export.onnx_session(onnx_file)
    _assert_parity(reference, export.run_onnx(session, x), "onnxruntime")
    ops = export.onnx_op_counts(onnx_file)
    assert "BatchNormalization" not in ops and ops["ConvTranspose"] == 1
    # every conv, the pointwise ones included, is one Conv node (not the CPU path's matrix products)
    kernels = sum(path[-1].key == "kernel" for path, _ in jax.tree_util.tree_leaves_with_path(variables["params"]))
    assert ops["Conv"] == kernels - 1 and not {"Einsum", "MatMul", "Gemm"} & set(ops)
    import onnx

    model = onnx.load(str(onnx_file))
    assert {o.version for o in model.opset_import if o.domain in ("", "ai.onnx")} == {export.ONNX_OPSET}
    groups = {a.i for n in model.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "group"}
    assert max(groups) > 1, "depthwise convs should be grouped Conv nodes"
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, *SIZE, 3]  # static by default
    assert json.loads(export.sidecar_path(onnx_file).read_text())["opset"] == export.ONNX_OPSET


def test_exported_models_find_the_same_people_on_the_coco_sample(small, stablehlo_file, onnx_file):
    """Through the Predictor (resize, flip test, upsampling) and the decoder, on real images.

    Random weights give flat maps with many near-equal maxima, unlike a trained network: without
    refine the people must be identical; refine's arg-max over whole maps may flip on a near tie
    (measured: 1 of 5406 keypoint coordinates), so there at most 0.1% may differ.
    """
    cfg, variables = small[:2]
    config = PredictConfig(input_size=SIZE[0], long_side_ratios=(SIZE[1] / SIZE[0],))
    session = export.onnx_session(onnx_file)
    with xla_optimizations_off():
        predictors = {
            "flax": Predictor(EfficientHRNet(cfg), variables, cfg.keypoints, config),
            "stablehlo": Predictor.from_apply_fn(export.stablehlo_apply_fn(stablehlo_file), None, cfg.keypoints, config),
            "onnxruntime": Predictor.from_apply_fn(export.onnx_apply_fn(session), None, cfg.keypoints, config),
        }
        people = 0
        for image_path in sorted(COCO_SAMPLE.glob("*.jpg")):
            image = read_image(image_path)
            maps = {name: p.maps(image)[:2] for name, p in predictors.items()}
            for refine in (False, True):
                want = decode(*maps["flax"], cfg.keypoints, DecodeConfig(refine=refine))
                people += want.num_people
                for name in ("stablehlo", "onnxruntime"):
                    where = f"{name} on {image_path.name}, refine={refine}"
                    _assert_parity(maps["flax"], maps[name], where)
                    got = decode(*maps[name], cfg.keypoints, DecodeConfig(refine=refine))
                    assert got.num_people == want.num_people, where
                    close = np.isclose(got.keypoints, want.keypoints, rtol=0, atol=1e-3)
                    assert close.all() if not refine else close.mean() >= 0.999, where
    assert people > 0, "random weights should still give peaks to decode"


def test_cli_export_writes_the_artefact_and_refuses_a_bad_size(tmp_path, capsys):
    out = tmp_path / "h-6.stablehlo"
    assert main(["export", "--phi", str(PHI), "--format", "stablehlo", "--out", str(out),
                 "--input-size", "64", "96", "--batch", "2"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["input"]["shape"] == [2, 64, 96, 3] and out.is_file() and printed["sidecar"].endswith(".json")
    assert main(["export", "--phi", str(PHI), "--format", "onnx", "--out", str(tmp_path / "x.onnx"),
                 "--input-size", "64", "100"]) == 2
    assert "64x100 is not a multiple of the network stride 32" in capsys.readouterr().err
    assert main(["export", "--format", "onnx", "--out", str(tmp_path / "x.onnx")]) == 2
    assert "exactly one of --checkpoint" in capsys.readouterr().err


def test_sweep_latency_times_the_onnx_export_beside_the_jax_forward(tmp_path):
    pytest.importorskip("onnxruntime", reason="the onnxruntime latency backend needs the 'export' extra")
    spec_text = ('name = "ort"\ntask = "profile"\nphi = [-6]\nrules = ["efficienthrnet"]\noutput = "out"\n'
                 '[latency]\ninput_size = 64\nwarmup = 0\nrepeats = 2\nbackend = "{}"\n')
    path = tmp_path / "ort.toml"
    path.write_text(spec_text.format("tensorrt"))
    with pytest.raises(ValueError, match=r"ort\.toml.*latency\.backend 'tensorrt' must be 'jax' or 'onnxruntime'"):
        load_spec(path)
    path.write_text(spec_text.format("onnxruntime"))
    with xla_optimizations_off():
        row = run_sweep(load_spec(path), out_dir=tmp_path / "out", progress=False).iloc[0]
    assert row["status"] == "done" and row["latency_ms"] > 0 and row["latency_onnxruntime_ms"] > 0
    assert row["fps_onnxruntime"] == pytest.approx(1e3 / row["latency_onnxruntime_ms"])


def test_compare_latency_refuses_unknown_backends(small):
    with pytest.raises(ValueError, match=r"\['tflite'\] must be a non-empty subset of \('jax', 'onnxruntime'\)"):
        export.compare_latency(small[0], 64, backends=("tflite",))


@pytest.mark.slow
@pytest.mark.parametrize("phi", [-4, -2, 0])
def test_export_parity_across_phi(phi, tmp_path):
    """Every phi of a coarse grid exports to both formats with parity (non-square input)."""
    pytest.importorskip("jax2onnx", reason="ONNX export needs the 'export' extra")
    cfg = generate_config(phi)
    native = os.environ.get("EFFICIENTHRNET_EXPORT_NATIVE") == "1"
    size = (cfg.input_size, cfg.input_size) if native else (128, 192)
    variables = export.random_variables(cfg, seed=10 + phi)  # numpy seeds are non-negative
    x = np.random.default_rng(2).normal(size=(1, *size, 3)).astype(np.float32)
    with xla_optimizations_off():
        reference = _flax_forward(cfg, variables, x)
        forward, _ = export.load_stablehlo(export.to_stablehlo(cfg, variables, tmp_path / "m.stablehlo", size))
        _assert_parity(reference, forward(x), f"stablehlo phi={phi}")
    session = export.onnx_session(export.to_onnx(cfg, variables, tmp_path / "m.onnx", size))
    _assert_parity(reference, export.run_onnx(session, x), f"onnxruntime phi={phi}")
