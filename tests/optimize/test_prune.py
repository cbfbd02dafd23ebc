"""Structured pruning of any architecture with torch-pruning: residual CNNs, attention blocks, and models it cannot prune.

The models are built here, seeded, from small configurations; nothing is downloaded. Unit tests prune
untrained models (which channels go depends only on the weights); the end-to-end test trains a residual
CNN on generated images for a few epochs and asserts what the optimizer does with its candidates,
never where a training run landed.
"""

from __future__ import annotations

import numpy as np
import pytest

from optimize.prune import PruningUnsupported, count_parameters, pruning_obstacle, structured_prune

torch = pytest.importorskip("torch")


class ResidualBlock(torch.nn.Module):
    """conv-BN-ReLU-conv-BN plus a shortcut (a 1x1 conv and BN where the shape changes), then ReLU."""

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(channels_out)
        self.conv2 = torch.nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(channels_out)
        self.shortcut = torch.nn.Sequential()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = torch.nn.Sequential(torch.nn.Conv2d(channels_in, channels_out, 1, stride, bias=False),
                                                torch.nn.BatchNorm2d(channels_out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class SmallResNet(torch.nn.Module):
    """A ResNet-style classifier of 3x32x32 images: a stem, three residual blocks, global average pooling."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(16),
                                        torch.nn.ReLU())
        self.blocks = torch.nn.Sequential(ResidualBlock(16, 16, 1), ResidualBlock(16, 32, 2), ResidualBlock(32, 32, 1))
        self.fc = torch.nn.Linear(32, classes)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean(dim=(2, 3)))


class FeatureTransformer(torch.nn.Module):
    """Sequences of 12 features: a projection to 32 dims, nn.TransformerEncoderLayer (4 heads, FFN 128), mean, head."""

    def __init__(self) -> None:
        super().__init__()
        self.project = torch.nn.Linear(12, 32)
        self.encoder = torch.nn.TransformerEncoderLayer(32, 4, 128, dropout=0.0, batch_first=True)
        self.head = torch.nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.encoder(self.project(x)).mean(dim=1))


class SelfAttention(torch.nn.Module):
    """Hand-written multi-head attention with separate q, k, v projections."""

    def __init__(self, dim: int = 32, num_heads: int = 4, fixed_head_dim: bool = False) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.fixed_head_dim = num_heads, dim // num_heads, fixed_head_dim
        self.q, self.k, self.v = (torch.nn.Linear(dim, dim) for _ in range(3))
        self.out = torch.nn.Linear(dim, dim)

    def forward(self, x):
        batch, length, _ = x.shape
        per_head = self.head_dim if self.fixed_head_dim else -1  # a fixed size does not follow pruned weights

        def heads(projection):
            return projection(x).view(batch, length, self.num_heads, per_head).transpose(1, 2)

        q, k, v = heads(self.q), heads(self.k), heads(self.v)
        attended = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1) @ v
        return self.out(attended.transpose(1, 2).reshape(batch, length, -1))


class AttentionBlock(torch.nn.Module):
    """x + attention(x), LayerNorm, x + FFN(x), mean, head: the residual stream is the model's input."""

    def __init__(self, fixed_head_dim: bool = False) -> None:
        super().__init__()
        self.attention = SelfAttention(fixed_head_dim=fixed_head_dim)
        self.norm = torch.nn.LayerNorm(32)
        self.ffn = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.GELU(), torch.nn.Linear(64, 32))
        self.head = torch.nn.Linear(32, 3)

    def forward(self, x):
        x = self.norm(x + self.attention(x))
        return self.head((x + self.ffn(x)).mean(dim=1))


def built(make):
    from optimize.train import build

    return build(make).eval()


def images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """3x32x32 noise with one colour channel brighter: the label is which one."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, count)
    pictures = rng.normal(0.0, 1.0, (count, 3, 32, 32)).astype(np.float32)
    pictures[np.arange(count), labels] += 0.5
    return pictures, labels.astype(np.int64)


def kept_rows(original, smaller) -> list[int]:
    """Which of `original`'s output rows `smaller` (a copy of that Linear with fewer outputs) kept, in order."""
    rows = original.weight.detach()
    return [next(i for i in range(len(rows)) if torch.equal(rows[i], row)) for row in smaller.weight.detach()]


def widths(module, kind) -> list[int]:
    return [layer.weight.shape[0] for layer in module.modules() if isinstance(layer, kind)]


def test_a_residual_cnn_loses_half_of_every_coupled_group_and_keeps_its_interface():
    model = built(SmallResNet)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    example = torch.from_numpy(images(4, seed=1)[0])
    pruned = structured_prune(model, 0.5, (example,))
    smaller = pruned.module
    assert widths(smaller, torch.nn.Conv2d) == [8, 8, 8, 16, 16, 16, 16, 16]  # 16/32 channels halved, shortcut too
    assert smaller.fc.in_features == 16 and smaller.fc.out_features == 3  # the classes stay
    for block in smaller.blocks:  # each BatchNorm has as many channels as the convolution before it
        assert block.bn1.num_features == block.conv1.out_channels == block.conv2.in_channels
        assert block.bn2.num_features == block.conv2.out_channels
        assert block.bn2.running_mean.shape == (block.conv2.out_channels,)
    # halving both sides of a convolution leaves about a quarter of its weights
    assert 0.2 * count_parameters(model) < count_parameters(smaller) < 0.35 * count_parameters(model)
    batch = torch.from_numpy(images(5, seed=2)[0])
    with torch.no_grad():
        assert smaller(batch).shape == model(batch).shape == (5, 3)
    assert pruned.groups > 0 and pruned.attention == "none"
    for name, tensor in model.state_dict().items():  # the user's model is not touched
        assert torch.equal(tensor, before[name]), name


def test_the_digits_mlp_and_cnn_keep_their_interface_with_half_their_hidden_units():
    from optimize.demos.digits import cnn, mlp

    for model in (built(mlp), built(cnn)):
        smaller = structured_prune(model, 0.5, (torch.rand(3, 64),)).module
        assert count_parameters(smaller) < 0.45 * count_parameters(model)
        inputs = torch.rand(3, 64)
        assert smaller(inputs).shape == model(inputs).shape == (3, 10)
    assert widths(structured_prune(built(cnn), 0.5, (torch.rand(3, 64),)).module, torch.nn.Conv2d) == [16, 32, 32]


def test_the_strongest_units_stay_and_the_next_layer_loses_the_matching_inputs():
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.1, 0.1], [5.0, 5.0], [0.2, 0.0], [3.0, -3.0]]))
        model[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    smaller = structured_prune(model, 0.5, (torch.rand(3, 2),)).module
    assert smaller[0].weight.tolist() == [[5.0, 5.0], [3.0, -3.0]]
    assert smaller[2].weight.tolist() == [[2.0, 4.0]]


def test_a_units_strength_counts_the_weights_of_every_layer_coupled_to_it():
    """Equal incoming weights: the outgoing ones (the next layer's inputs) decide which units stay."""
    model = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
        model[2].weight.copy_(torch.tensor([[0.1, 4.0, -3.0, 0.2]]))
    smaller = structured_prune(model, 0.5, (torch.rand(3, 2),)).module
    assert smaller[2].weight.tolist() == [[4.0, -3.0]]


def test_a_transformer_layer_loses_head_dims_evenly_and_ffn_channels_with_their_coupled_layers():
    model = built(FeatureTransformer)
    pruned = structured_prune(model, 0.5, (torch.rand(4, 5, 12),))
    attention, encoder = pruned.module.encoder.self_attn, pruned.module.encoder
    assert (attention.num_heads, attention.embed_dim, attention.head_dim) == (4, 16, 4)  # 4 heads of 8 -> 4 of 4
    assert attention.in_proj_weight.shape == (48, 16) and attention.out_proj.weight.shape == (16, 16)
    assert encoder.linear1.weight.shape == (64, 16) and encoder.linear2.weight.shape == (16, 64)  # FFN 128 -> 64
    assert encoder.norm1.normalized_shape == encoder.norm2.normalized_shape == (16,)  # the residual stream
    assert pruned.module.project.out_features == 16 and pruned.module.head.in_features == 16
    assert pruned.attention == "head dims pruned"
    sequences = torch.rand(2, 7, 12)  # another length than the example's
    with torch.no_grad():
        assert pruned.module(sequences).shape == model(sequences).shape == (2, 3)


def test_hand_written_attention_loses_the_same_dims_in_every_head_and_its_input_stream_stays_whole():
    model = built(AttentionBlock)
    pruned = structured_prune(model, 0.5, (torch.rand(4, 5, 32),))
    attention = pruned.module.attention
    assert [layer.out_features for layer in (attention.q, attention.k, attention.v)] == [16, 16, 16]
    assert attention.out.in_features == 16 and attention.out.out_features == 32  # x + attention(x): x is the input
    kept = [kept_rows(getattr(model.attention, name), getattr(attention, name)) for name in ("q", "k", "v")]
    assert kept[0] == kept[1] == kept[2]  # a query dim goes with its key and value dims
    assert np.bincount(np.array(kept[0]) // 8).tolist() == [4, 4, 4, 4]  # each head of 8 keeps 4
    assert pruned.module.ffn[0].out_features == 32 and pruned.module.norm.normalized_shape == (32,)
    assert pruned.attention == "head dims pruned"
    with torch.no_grad():
        assert pruned.module(torch.rand(2, 6, 32)).shape == (2, 3)


def test_attention_whose_code_fixes_its_head_size_is_left_whole_and_the_rest_is_pruned():
    model = built(lambda: AttentionBlock(fixed_head_dim=True))
    pruned = structured_prune(model, 0.5, (torch.rand(4, 5, 32),))
    assert pruned.attention.startswith("left whole: pruning its head dims failed")
    assert "RuntimeError" in pruned.attention  # the view with the old head size, named
    assert pruned.module.attention.q.out_features == 32 and pruned.module.ffn[0].out_features == 32  # FFN 64 -> 32
    with torch.no_grad():
        assert pruned.module(torch.rand(2, 6, 32)).shape == (2, 3)


@pytest.mark.parametrize(("make", "example", "expected"), [
    (lambda: torch.nn.Sequential(torch.nn.Linear(4, 2)), torch.rand(2, 4),
     "Sequential: nothing to remove, every group of coupled channels reaches the model's inputs or outputs"),
    (lambda: torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GRU(8, 8, batch_first=True)), torch.rand(2, 3, 4),
     "torch-pruning has no rule for GRU (1)"),
    (lambda: torch.jit.script(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))),
     torch.rand(2, 4), "a TorchScript module cannot be traced and reshaped; give the Python nn.Module"),
])
def test_a_model_that_cannot_be_pruned_says_why(make, example, expected):
    model = built(make)
    with pytest.raises(PruningUnsupported) as raised:
        structured_prune(model, 0.5, (example,))
    assert expected in str(raised.value)
    assert pruning_obstacle(model, (example,)) == str(raised.value)


def test_the_candidates_say_why_a_model_cannot_be_pruned_and_build_for_one_that_can():
    from optimize.candidates import not_applicable
    from optimize.source import ModelSource

    def source(module, inputs):
        return ModelSource(name="m", version="1", module=module, example_input=inputs[:4], validation_inputs=inputs,
                           validation_labels=np.zeros(len(inputs), np.int64), train_inputs=inputs,
                           train_labels=np.zeros(len(inputs), np.int64))

    flat = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    single = source(built(lambda: torch.nn.Sequential(torch.nn.Linear(4, 2))), flat)
    for name in ("pruned", "pruned_int8_static", "distilled"):
        assert not_applicable(name, single) == ("structured pruning: Sequential: nothing to remove, every group of "
                                                "coupled channels reaches the model's inputs or outputs")
    assert not_applicable("sparse", single) is None  # the model's other candidates still run
    residual = source(built(SmallResNet), images(8, seed=3)[0])
    assert [not_applicable(name, residual) for name in ("pruned", "pruned_int8_static", "distilled")] == [None] * 3


def test_the_torch_pruning_contract():
    """What optimize/prune.py relies on in torch-pruning beyond the pruner's arguments, and in autograd (its
    docstring lists it)."""
    import inspect

    import torch_pruning as tp

    assert "interactive" in inspect.signature(tp.pruner.BasePruner.step).parameters
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    pruner = tp.pruner.BasePruner(model, torch.rand(2, 4), importance=tp.importance.GroupMagnitudeImportance(p=1),
                                  pruning_ratio=0.5)
    groups = list(pruner.step(interactive=True))
    assert groups
    for group in groups:
        for dependency, indices in group:
            node = dependency.target
            assert isinstance(node.outputs, list) and hasattr(node, "module") and hasattr(node, "grad_fn")
            assert isinstance(pruner.DG.is_out_channel_pruning_fn(dependency.handler), bool)
            assert isinstance(pruner.DG.is_in_channel_pruning_fn(dependency.handler), bool)
    last = [dependency.target for group in groups for dependency, _ in group if dependency.target.module is model[2]]
    assert last and not last[0].outputs  # the model's output layer has nothing downstream
    assert tp.ops.module2type(torch.nn.GRU(2, 2)) == tp.ops.OPTYPE.ELEMENTWISE
    assert tp.ops.module2type(torch.nn.Linear(2, 2)) != tp.ops.OPTYPE.ELEMENTWISE
    weight = torch.nn.Parameter(torch.ones(2, 2))
    assert (weight / 2.0).grad_fn._saved_other.numel() == 1  # PyTorch: a scalar operand, as autograd saved it
    assert (weight * torch.ones(2, 2)).grad_fn._saved_other.shape == (2, 2)


@pytest.fixture(scope="module")
def resnet_source():
    """SmallResNet trained for 3 epochs on 256 generated images; 128 held out."""
    from optimize.source import ModelSource
    from optimize.train import fit

    train_x, train_y = images(256, seed=10)
    valid_x, valid_y = images(128, seed=11)
    model = fit(built(SmallResNet), train_x, train_y, epochs=3, lr=3e-3, what="training the small ResNet")
    return ModelSource(name="small-resnet", version="1", module=model, example_input=train_x[:8],
                       validation_inputs=valid_x, validation_labels=valid_y, train_inputs=train_x,
                       train_labels=train_y)


def test_a_residual_cnn_gets_pruned_and_distilled_candidates_built_checked_and_judged(resnet_source, tmp_path):
    from optimize.manifest import load_verified
    from optimize.pipeline import optimize_model
    from optimize.settings import OptimizeSettings

    settings = OptimizeSettings(candidates=("pruned", "distilled"), fine_tune_epochs=2, distill_epochs=2,
                                latency_repeats=10, serving_max_batch_size=8)
    optimize_model(resnet_source, tmp_path, settings, log=lambda _: None)
    manifest, _ = load_verified(tmp_path)
    candidates = {candidate.name: candidate for candidate in manifest.candidates}
    assert set(candidates) == {"fp32", "pruned", "distilled"}  # built, not skipped
    fp32_size = candidates["fp32"].measurement.size_bytes
    for name, step_name in (("pruned", "prune_structured"), ("distilled", "distill")):
        candidate = candidates[name]
        steps = {step.name: step.settings for step in candidate.steps}
        assert set(steps) == {step_name, "export_onnx"}, name
        assert steps["export_onnx"]["parity_max_abs_diff"] <= settings.parity_tolerance  # checked against PyTorch
        assert candidate.measurement.size_bytes < 0.5 * fp32_size, name  # a smaller network, not zeros
        # judged: accepted only as faster beyond the spread, or rejected saying why
        if candidate.accepted:
            assert ", faster than fp32: " in candidate.reason, (name, candidate.reason)
        else:
            assert any(why in candidate.reason for why in ("exceeds tolerance", "slower than fp32",
                                                           "not faster than fp32 beyond")), (name, candidate.reason)
    pruning = {step.name: step.settings for step in candidates["pruned"].steps}["prune_structured"]
    assert pruning["parameters_after"] < 0.35 * pruning["parameters_before"]
    assert pruning["pruner"].startswith("torch-pruning ") and pruning["coupled_groups_pruned"] > 0
