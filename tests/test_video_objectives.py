"""VideoMAE and temporal order: tube masks, tubelets, the loss against a loop reference and against
transformers' own VideoMAEForPreTraining, the Hugging Face format, and the tuple samplers."""
from __future__ import annotations

import itertools

import pytest
import torch

from mmssl.losses import videomae_loss
from mmssl.models.encoders import EncoderSpecError
from mmssl.models.masking import tube_mask, tubelet_patchify, tubelet_unpatchify
from mmssl.objectives.frame_tuples import fuse, gather_frames, sample_windows
from mmssl.objectives.order_prediction import ORDER_CLASSES, OrderPrediction, sort_tuples
from mmssl.objectives.shuffle_and_learn import ShuffleAndLearn, verify_tuples

TASKS = {"verify": ShuffleAndLearn, "sort": OrderPrediction}
from mmssl.objectives.videomae import VideoMAE, load_videomae

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
        "decoder_hidden_size": 16, "decoder_num_hidden_layers": 1, "decoder_num_attention_heads": 2,
        "decoder_intermediate_size": 32, "patch_size": 8, "tubelet_size": 2}


def tiny_videomae(mask_ratio=0.9, frames=4, size=32, **kwargs) -> VideoMAE:
    torch.manual_seed(0)
    return VideoMAE(load_videomae("", TINY, frames, size), mask_ratio, **kwargs)


def test_tube_mask_hides_the_same_patches_in_every_frame():
    torch.manual_seed(0)
    mask = tube_mask(5, 8, 49, 0.9)
    assert mask.shape == (5, 8 * 49) and mask.dtype == torch.bool
    per_slot = mask.view(5, 8, 49)
    assert (per_slot == per_slot[:, :1]).all()  # a tube: identical in every temporal slot
    assert (per_slot[:, 0].sum(1) == int(0.9 * 49)).all()  # 44 of 49 hidden in every sample
    assert len({tuple(r.tolist()) for r in per_slot[:, 0]}) == 5  # drawn per sample


def test_tubelets_follow_the_conv3d_token_order():
    """Token i of `tubelet_patchify` is the tubelet the Conv3d embedding writes at position i."""
    video = torch.randn(2, 4, 3, 16, 24)
    tubes = tubelet_patchify(video, 2, 8)  # [2, 2*2*3, 2*8*8, 3]
    assert tubes.shape == (2, 12, 128, 3)
    conv = torch.nn.Conv3d(3, 1, (2, 8, 8), stride=(2, 8, 8), bias=False)
    w = torch.randn(1, 3, 2, 8, 8)
    conv.weight.data.copy_(w)
    tokens = conv(video.permute(0, 2, 1, 3, 4)).flatten(2).squeeze(1)  # [2, 12], the embedding's order
    manual = (tubes * w[0].permute(1, 2, 3, 0).reshape(1, 1, 128, 3)).sum((-1, -2))
    torch.testing.assert_close(manual, tokens, rtol=1e-4, atol=1e-4)
    assert torch.equal(tubelet_unpatchify(tubes, 2, 8, 4, 16, 24), video)


def loop_videomae_loss(pred, video, mask, tubelet, patch, eps=1e-6):
    """The paper's formula, one hidden tubelet at a time: per-channel standardised target, then
    the squared error averaged over hidden tubelets and their values."""
    b, t, c, h, w = video.shape
    total, count = 0.0, 0
    for i in range(b):
        j = 0
        for ti, hi, wi in itertools.product(range(t // tubelet), range(h // patch), range(w // patch)):
            token = (ti * (h // patch) + hi) * (w // patch) + wi
            if not mask[i, token]:
                continue
            cube = video[i, ti * tubelet:(ti + 1) * tubelet, :, hi * patch:(hi + 1) * patch, wi * patch:(wi + 1) * patch]
            target = cube.permute(0, 2, 3, 1).reshape(-1, c)  # (u p q) x c
            target = (target - target.mean(0)) / (target.std(0, unbiased=True) + eps)
            total += ((pred[i, j] - target.reshape(-1)) ** 2).sum()
            count += target.numel()
            j += 1
    return total / count


def test_videomae_loss_matches_a_loop_over_hidden_tubelets():
    torch.manual_seed(0)
    video = torch.rand(2, 4, 3, 16, 16)
    mask = tube_mask(2, 2, 4, 0.75)  # 3 of 4 spatial positions hidden, in both temporal slots
    pred = torch.randn(2, 6, 2 * 8 * 8 * 3)
    got = videomae_loss(pred, tubelet_patchify(video, 2, 8), mask)
    torch.testing.assert_close(got, loop_videomae_loss(pred, video, mask, 2, 8))
    flat = video.clone()
    flat[:, :, :, :8, :8] = 0.5 + 0.001 * torch.randn_like(flat[:, :, :, :8, :8])  # near-flat tubelets: noise
    got = videomae_loss(pred, tubelet_patchify(flat, 2, 8), mask, eps=1 / 255)
    torch.testing.assert_close(got, loop_videomae_loss(pred, flat, mask, 2, 8, eps=1 / 255))


def test_videomae_loss_equals_transformers_pretraining_loss():
    model = tiny_videomae(0.75, norm_eps=1e-6)  # transformers keeps the paper's 1e-6
    video = torch.randn(2, 4, 3, 32, 32)
    torch.manual_seed(3)
    loss, pred, mask, visible, _ = model.reconstruct(video)
    ref = model.model(video, bool_masked_pos=mask)  # transformers' own forward, same mask
    torch.testing.assert_close(pred, ref.logits)
    torch.testing.assert_close(loss, ref.loss)


def test_encoder_sees_only_visible_tokens_and_ratio_zero_reconstructs_all():
    model = tiny_videomae(0.9, frames=4, size=64)  # 2 temporal slots x 64 spatial patches
    video = torch.randn(2, 4, 3, 64, 64)
    _, pred, mask, visible, _ = model.reconstruct(video)
    hidden = int(0.9 * 64)
    assert mask.sum(1).tolist() == [2 * hidden] * 2
    assert visible.shape == (2, 2 * (64 - hidden), 32)  # 14 tokens of 128 reach the encoder
    assert pred.shape == (2, 2 * hidden, 2 * 8 * 8 * 3)
    loss, pred0, mask0, visible0, _ = model.reconstruct(video, 0.0)
    assert not mask0.any() and visible0.shape[1] == 128 and pred0.shape[1] == 128 and torch.isfinite(loss)
    out = model({"video": video})
    assert out["masked_share"] == pytest.approx(2 * hidden / 128)
    # pool: time keeps the 2 temporal slots in order; tokens averages all 128.
    tokens = model.backbone(video).last_hidden_state
    torch.testing.assert_close(model.video_features(video), torch.cat([tokens[:, :64].mean(1), tokens[:, 64:].mean(1)], 1))
    model.pool = "tokens"
    torch.testing.assert_close(model.video_features(video), tokens.mean(1))
    # The encoder ends in LayerNorm, as the paper's pre-training encoder (transformers' default drops it).
    assert model.backbone.layernorm is not None


def test_hugging_face_format_round_trip(tmp_path):
    from transformers import AutoModel

    model = tiny_videomae()
    video = torch.randn(1, 4, 3, 32, 32)
    model.backbone.save_pretrained(str(tmp_path / "encoder"))
    model.model.save_pretrained(str(tmp_path / "pretraining"))
    assert (tmp_path / "encoder" / "model.safetensors").exists()
    encoder = AutoModel.from_pretrained(str(tmp_path / "encoder")).eval()
    assert type(encoder).__name__ == "VideoMAEModel"
    model.eval()
    torch.testing.assert_close(encoder(video).last_hidden_state, model.backbone(video).last_hidden_state)
    # A pre-training checkpoint restores everything; a bare encoder restores the encoder only.
    again = VideoMAE(load_videomae(str(tmp_path / "pretraining"), {}, 4, 32)).eval()
    torch.testing.assert_close(again.model.decoder.head.weight, model.model.decoder.head.weight)
    from_encoder = VideoMAE(load_videomae(str(tmp_path / "encoder"), {}, 4, 32)).eval()
    torch.testing.assert_close(from_encoder.video_features(video), model.video_features(video))
    with pytest.raises(EncoderSpecError, match="expects clips of 4 frames at 32 px"):
        load_videomae(str(tmp_path / "pretraining"), {}, 8, 32)
    with pytest.raises(EncoderSpecError, match="cannot load VideoMAE"):
        load_videomae(str(tmp_path / "missing"), {}, 4, 32)
    with pytest.raises(EncoderSpecError, match="videomae.config"):
        load_videomae("", {"hidden_sise": 8}, 4, 32)


def test_windows_are_ordered_evenly_spaced_and_prefer_motion():
    torch.manual_seed(0)
    video = torch.zeros(64, 16, 3, 8, 8)
    video[:, 8:] = torch.rand(64, 8, 3, 8, 8)  # still for 8 frames, then every frame changes
    idx = sample_windows(video, 5)
    steps = idx[:, 1:] - idx[:, :-1]
    assert (steps > 0).all() and (steps == steps[:, :1]).all() and (idx < 16).all()
    # A window inside the still first half has zero motion: it is (almost) never drawn.
    assert (idx[:, -1] >= 8).all()
    with pytest.raises(ValueError, match="at least 5 frames"):
        sample_windows(torch.zeros(1, 4, 3, 8, 8), 5)


def test_verify_tuples_are_shuffle_and_learn_positives_and_negatives():
    torch.manual_seed(0)
    idx5 = torch.arange(5).repeat(400, 1) * 3 + 1  # a..e = 1, 4, 7, 10, 13
    idx, label = verify_tuples(idx5)
    rows = {tuple(r) for r in idx.tolist()}
    assert rows == {(4, 7, 10), (10, 7, 4), (4, 1, 10), (4, 13, 10)}
    for r, y in zip(idx.tolist(), label.tolist()):
        assert y == (r in ([4, 7, 10], [10, 7, 4]))
    assert 0.4 < label.float().mean() < 0.6


def test_sort_classes_pair_each_permutation_with_its_reverse():
    assert len(ORDER_CLASSES) == 12
    classes = {p: k for k, p in enumerate(ORDER_CLASSES)}
    for p in itertools.permutations(range(4)):
        assert (p in classes) != (p[::-1] in classes)  # exactly one of p and its reverse names the class
    torch.manual_seed(0)
    idx4 = torch.tensor([[2, 5, 8, 11]]).repeat(300, 1)
    shuffled, label = sort_tuples(idx4)
    for row, y in zip(shuffled.tolist(), label.tolist()):
        order = tuple((v - 2) // 3 for v in row)
        assert classes.get(order, classes.get(order[::-1])) == y
    assert set(label.tolist()) == set(range(12))


def test_temporal_order_heads_and_clip_features():
    from mmssl.models.encoders import build_encoder
    from mmssl.recipe_image import SMALL_RESNET

    video = torch.randn(4, 16, 3, 32, 32)
    frames = gather_frames(video, torch.tensor([[0, 3, 9]] * 4))
    assert torch.equal(frames[2, 1], video[2, 3])
    for (task, classes), fusion in itertools.product((("verify", 2), ("sort", 12)), ("difference", "concat")):
        model = TASKS[task](build_encoder(SMALL_RESNET), hidden_dim=32, eval_frames=4, fusion=fusion)
        torch.manual_seed(5)
        logits, labels, _ = model.logits(video)
        assert logits.shape == (4, classes) and labels.max() < classes
        torch.manual_seed(5)  # the same tuples: the logged figures are these logits' loss and accuracy
        out = model({"video": video})
        torch.testing.assert_close(out["loss"], torch.nn.functional.cross_entropy(logits, labels))
        assert float(out["acc"]) == float((logits.argmax(1) == labels).float().mean())
        assert model.eval().video_features(video).shape == (4, 4 * 512)
    for cls in TASKS.values():
        with pytest.raises(ValueError, match="fusion must be 'difference' or 'concat', got 'sum'"):
            cls(build_encoder(SMALL_RESNET), fusion="sum")
    # The recipe picks one by `temporal_order.task` and gives it the same keys.
    import inspect

    assert inspect.signature(ShuffleAndLearn).parameters.keys() == inspect.signature(OrderPrediction).parameters.keys()


def test_difference_fusion_feeds_steps_between_frames():
    """verify sees [f2 - f1, f3 - f2]; a sort pair sees f_j - f_i; concat sees the features whole."""
    a, b = torch.randn(3, 5), torch.randn(3, 5)

    class Enc(torch.nn.Identity):
        out_dim = 5

    diff, cat = ShuffleAndLearn(Enc(), fusion="difference"), ShuffleAndLearn(Enc(), fusion="concat")
    assert torch.equal(fuse(a, b, "difference"), b - a) and torch.equal(fuse(a, b, "concat"), torch.cat([a, b], 1))
    assert diff.classifier[0].in_features == 10 and cat.classifier[0].in_features == 15
    assert OrderPrediction(Enc(), fusion="difference").pair.in_features == 5


def test_rgb_flow_loss_is_infonce_between_each_clips_frames_and_its_flow():
    from mmssl.models.encoders import build_encoder
    from mmssl.objectives.rgb_flow import RGBFlow
    from mmssl.recipe_image import SMALL_RESNET

    torch.manual_seed(0)
    flow_spec = {**SMALL_RESNET, "config": {**SMALL_RESNET["config"], "num_channels": 4}}
    model = RGBFlow(build_encoder(SMALL_RESNET), build_encoder(flow_spec), eval_frames=2, embed_dim=8,
                    hidden_dim=16, temperature=0.1).eval()
    batch = {"video": torch.randn(3, 6, 3, 32, 32), "flow": torch.randn(3, 4, 32, 32)}
    out = model(batch)
    r, f = model.embed(batch["video"], batch["flow"])
    terms = []
    for i in range(3):
        rows = torch.stack([r[i] @ f[j] for j in range(3)]) / 0.1  # frames -> every flow
        cols = torch.stack([f[i] @ r[j] for j in range(3)]) / 0.1  # flow -> every clip's frames
        terms += [torch.logsumexp(rows, 0) - rows[i], torch.logsumexp(cols, 0) - cols[i]]
    torch.testing.assert_close(out["loss"], torch.stack(terms).mean())
    # Probes read the RGB tower alone: frames 0 and 5 (2 evenly spaced of 6), concatenated in order.
    feats = model.video_features(batch["video"])
    torch.testing.assert_close(feats, torch.cat([model.backbone(batch["video"][:, 0]),
                                                 model.backbone(batch["video"][:, 5])], 1))
