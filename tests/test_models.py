"""Every registered model builds and runs; the coursework's models match its tables."""

import numpy as np
import pytest
from conftest import model_options as options

from cvtrain.errors import DataError
from cvtrain.models import build_model, list_models


@pytest.mark.parametrize("name", sorted(list_models()))
def test_every_registered_model_builds_and_runs_forward(name):
    opts = options(name)
    shape = opts.example_input_shape
    model = build_model(opts, shape, 25)
    out = model(np.random.default_rng(0).random((2, *shape), dtype=np.float32), training=False)
    assert tuple(out.shape) == (2, 25)
    np.testing.assert_allclose(np.asarray(out).sum(axis=1), 1.0, rtol=1e-5)


def _shapes(model, kinds):
    return [(layer.__class__.__name__, tuple(layer.output.shape[1:]))
            for layer in model.layers if layer.__class__.__name__ in kinds]


def test_basenet_matches_part1_table():
    model = build_model(options("basenet"), (32, 32, 3), 25)
    assert model.count_params() == 24_197
    assert _shapes(model, {"Conv2D", "MaxPooling2D", "Flatten", "Dense"}) == [
        ("Conv2D", (28, 28, 6)), ("MaxPooling2D", (14, 14, 6)),
        ("Conv2D", (10, 10, 16)), ("MaxPooling2D", (5, 5, 16)),
        ("Flatten", (400,)), ("Dense", (50,)), ("Dense", (25,)),
    ]


def test_improved_model_matches_final_table():
    model = build_model(options("basenet", deep=True, batch_norm=True, dropout=0.25),
                        (32, 32, 3), 25)
    kinds = [layer.__class__.__name__ for layer in model.layers[1:]]
    assert kinds == [
        "Conv2D", "BatchNormalization", "ReLU", "Conv2D", "BatchNormalization", "ReLU",
        "MaxPooling2D", "Dropout",
        "Conv2D", "BatchNormalization", "ReLU", "Conv2D", "BatchNormalization", "ReLU",
        "MaxPooling2D", "Dropout",
        "Conv2D", "BatchNormalization", "ReLU", "Dropout",
        "Flatten", "Dense", "BatchNormalization", "ReLU", "Dense",
    ]
    assert _shapes(model, {"Conv2D", "MaxPooling2D", "Flatten", "Dense"}) == [
        ("Conv2D", (32, 32, 32)), ("Conv2D", (30, 30, 32)), ("MaxPooling2D", (15, 15, 32)),
        ("Conv2D", (15, 15, 64)), ("Conv2D", (13, 13, 64)), ("MaxPooling2D", (6, 6, 64)),
        ("Conv2D", (6, 6, 128)), ("Flatten", (4608,)), ("Dense", (50,)), ("Dense", (25,)),
    ]
    # conv 896+9248+18496+36928+73856, BN 4*(32+32+64+64+128+50), dense 230450+1275
    assert model.count_params() == 372_629


def test_intermediate_steps_are_built_from_the_same_fields():
    deeper = build_model(options("basenet", deep=True), (32, 32, 3), 25)
    kinds = {layer.__class__.__name__ for layer in deeper.layers}
    assert "BatchNormalization" not in kinds and "Dropout" not in kinds
    assert deeper.count_params() == 372_629 - 4 * (32 + 32 + 64 + 64 + 128 + 50)
    bn = build_model(options("basenet", deep=True, batch_norm=True), (32, 32, 3), 25)
    assert "Dropout" not in {layer.__class__.__name__ for layer in bn.layers}


def test_bonus_structure():
    model = build_model(options("bonus"), (32, 32, 3), 25)
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds.count("Conv2D") == 8 and kinds.count("MaxPooling2D") == 3
    assert "GlobalAveragePooling2D" in kinds and "Flatten" not in kinds
    assert kinds.count("Dense") == 4  # three dense blocks + the classifier


def test_transfer_heads_match_part3():
    a1 = build_model(options("resnet50_features_dense"), (2048,), 200)
    assert a1.count_params() == 2048 * 200 + 200
    a2 = build_model(options("resnet50_features_mlp"), (2048,), 200)
    assert _shapes(a2, {"Dense", "Dropout"}) == [("Dense", (1024,)), ("Dense", (512,)),
                                                ("Dropout", (512,)), ("Dense", (200,))]
    b = build_model(options("resnet50_maps_convhead"), (7, 7, 2048), 200)
    assert _shapes(b, {"Conv2D", "MaxPooling2D", "Flatten", "Dense"}) == [
        ("Conv2D", (5, 5, 1024)), ("MaxPooling2D", (2, 2, 1024)), ("Flatten", (4096,)),
        ("Dense", (512,)), ("Dense", (218,)), ("Dense", (200,))]


def test_finetune_trains_every_layer_and_missing_weights_fail_clearly(tmp_path):
    model = build_model(options("resnet50_finetune"), (64, 64, 3), 200)
    assert all(layer.trainable for layer in model.layers)
    assert _shapes(model, {"Dense", "Dropout"}) == [("Dense", (1024,)), ("Dropout", (1024,)),
                                                   ("Dense", (200,))]
    with pytest.raises(DataError, match="no weights file at .*missing.weights.h5"):
        build_model(options("resnet50_finetune", weights=str(tmp_path / "missing.weights.h5")),
                    (64, 64, 3), 200)


def test_a_weights_file_that_is_not_resnet50_weights_is_a_data_error(tmp_path):
    from cvtrain.models.resnet import build_backbone

    bogus = tmp_path / "bogus.weights.h5"
    bogus.write_bytes(b"not an HDF5 file")
    opts = options("resnet50_finetune", weights=str(bogus))
    with pytest.raises(DataError, match=r"model.weights: .*bogus.weights.h5: not the weights of "
                                        r"a no-top ResNet50 \(OSError"):
        build_backbone(opts, 64, pooling=None)
