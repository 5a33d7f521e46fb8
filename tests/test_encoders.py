"""Encoders: registry, pinned preprocessing, views, and every encoder loaded through the same
local-file / local-directory code users use (tiny models saved to tmp; real weights where they
ship in packages). Offline, CPU, deterministic."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ptg.pipeline.encoders import EncoderSpec, Preprocess, apply_preprocess, build_encoder, list_encoders, register_encoder
from ptg.pipeline.core.errors import PtgError
from ptg.pipeline.datasets.views import VIEW_SETS, apply_view, parse_views, tile_bounds, tile_view_for

torch.set_num_threads(1)


def _photo(name: str = "chelsea", shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    from skimage import data, transform

    return transform.resize(getattr(data, name)(), shape, anti_aliasing=True).astype(np.float32)


# --------------------------------------------------------------------------------- registry


def test_registry_lists_all_and_refuses_duplicates_and_unknown_names():
    names = [e.name for e in list_encoders()]
    assert names == ["blip2", "clip", "imagenet", "restoration", "sd"]  # degradation is a row source (extract.py)
    with pytest.raises(ValueError, match="already registered"):
        register_encoder("clip", summary="", dim="", preprocessing="", default_weights="")(lambda s: None)
    with pytest.raises(PtgError, match="unknown encoder 'clap'"):
        build_encoder(EncoderSpec("clap"))
    with pytest.raises(PtgError, match="--timestep applies to the sd encoder"):
        build_encoder(EncoderSpec("imagenet", timestep=10))


# ---------------------------------------------------------------------------- preprocessing


def test_preprocess_policies_shapes_and_normalisation():
    img = _photo(shape=(60, 100))
    short = Preprocess(size=32, resize="short_side_center_crop", resize_short=40, mean=(0.5,) * 3, std=(0.5,) * 3)
    t = apply_preprocess(img, short)
    assert t.shape == (3, 32, 32) and t.dtype == torch.float32
    assert -1.0 <= float(t.min()) and float(t.max()) <= 1.0
    assert torch.equal(t, apply_preprocess(img, short))  # deterministic
    assert apply_preprocess(img, Preprocess(size=48, resize="squash")).shape == (3, 48, 48)
    # centre crop: no resampling, so the pixels are the image's own
    cc = apply_preprocess(img, Preprocess(size=40, resize="center_crop"))
    assert torch.allclose(cc, torch.from_numpy(img[10:50, 30:70]).permute(2, 0, 1))
    assert apply_preprocess(img, Preprocess(size=128, resize="center_crop")).shape == (3, 128, 128)  # padded
    with pytest.raises(PtgError, match="unknown resize policy"):
        Preprocess(size=32, resize="stretch")


# ------------------------------------------------------------------------------------ views


def test_view_sets_and_transforms():
    assert VIEW_SETS["flips"] == ("identity", "hflip", "vflip", "hvflip")
    img = np.arange(4 * 6 * 3, dtype=np.float32).reshape(4, 6, 3)
    outs = [apply_view(img, v) for v in VIEW_SETS["d4"]]
    assert len({o.tobytes() + bytes(o.shape) for o in outs}) == 8  # 8 distinct symmetries
    np.testing.assert_array_equal(apply_view(img, "hflip"), img[:, ::-1])
    np.testing.assert_array_equal(apply_view(img, "rot90"), np.rot90(img))
    np.testing.assert_array_equal(apply_view(img, "hvflip"), apply_view(img, "rot180"))
    sq = np.arange(9, dtype=np.float32).reshape(3, 3, 1)
    anti = apply_view(sq, "antitranspose")[..., 0]
    assert anti[0, 0] == sq[2, 2, 0] and anti[0, 2] == sq[0, 2, 0] and anti[2, 0] == sq[2, 0, 0]
    with pytest.raises(PtgError, match="unknown view"):
        apply_view(img, "rot45")
    with pytest.raises(PtgError, match="unknown --views"):
        parse_views("rotations")


def test_tiles_cover_the_image_and_crop_centre_lookup():
    names = parse_views("tiles:3")
    assert names[0] == "identity" and len(names) == 10
    img = np.random.default_rng(0).random((10, 14, 3)).astype(np.float32)
    total = sum(apply_view(img, n).size for n in names[1:])
    assert total == img.size  # tiles partition the image
    np.testing.assert_array_equal(apply_view(img, "tile3_r1c2"), img[3:6, 9:14])
    assert tile_bounds(10, 14, 3, 1, 2) == (3, 6, 9, 14)
    assert tile_view_for(10, 14, 3, top=0, left=0, crop_h=4, crop_w=4) == "tile3_r0c0"
    assert tile_view_for(10, 14, 3, top=6, left=8, crop_h=4, crop_w=6) == "tile3_r2c2"  # centre (8, 11)
    assert tile_view_for(10, 14, 3, top=1, left=4, crop_h=4, crop_w=2) == "tile3_r1c1"  # centre (3, 5)
    with pytest.raises(PtgError, match="1..16"):
        parse_views("tiles:0")


# ------------------------------------------------------------------------ real weights


def test_imagenet_real_weights_classify_a_cat_and_pool_1280():
    from ptg.pipeline.encoders.imagenet import packaged_weights
    from ptg.pipeline.encoders.registry import sha256_file

    enc = build_encoder(EncoderSpec("imagenet"))
    assert enc.dim == 1280 and not enc.random_init
    assert enc.fingerprint == sha256_file(packaged_weights())
    x = apply_preprocess(_photo("chelsea", (300, 451)), enc.preprocess)[None]
    with torch.inference_mode():
        logits = enc.module(x)
        prior = enc.forward(x)
    assert int(logits.argmax()) in range(281, 286)  # ImageNet's domestic cat classes: real weights
    assert prior.shape == (1, 1280) and torch.allclose(prior.norm(dim=-1), torch.ones(1))


def test_restoration_real_ffdnet_features_follow_noise():
    enc = build_encoder(EncoderSpec("restoration", size=64))
    assert enc.dim == 192 and len(enc.fingerprint) == 64 and enc.preprocess.resize == "center_crop"
    clean = _photo("astronaut", (64, 64))
    rng = np.random.default_rng(0)
    with torch.inference_mode():
        p = [enc.forward(apply_preprocess(np.clip(clean + rng.normal(0, s / 255, clean.shape), 0, 1).astype(np.float32),
                                          enc.preprocess)[None])[0] for s in (0, 50)]
    # the same content at two noise levels gives clearly different priors
    assert float((p[0] - p[1]).norm()) > 0.05 * float(p[0].norm())


def test_random_init_is_explicit_and_fingerprinted():
    enc = build_encoder(EncoderSpec("restoration", random_init=True, seed=3, size=32))
    assert enc.random_init and enc.fingerprint == "random-init-3" and enc.source == "random init"


# ---------------------------------------------------------- tiny models saved to tmp dirs


def _tiny_clip(tmp_path: Path) -> tuple[Path, Path]:
    import open_clip

    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
           "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 1, "layers": 1}}
    cfg_path = tmp_path / "tiny-clip-test.json"
    cfg_path.write_text(json.dumps(cfg))
    open_clip.add_model_config(cfg_path)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-clip-test", pretrained=None)
    ckpt = tmp_path / "tiny_clip.pt"
    torch.save(model.state_dict(), ckpt)
    return cfg_path, ckpt


def test_clip_local_checkpoint_matches_encode_image(tmp_path, monkeypatch):
    import open_clip
    import torch.nn.functional as F

    from ptg.pipeline.encoders.registry import sha256_file

    cfg_path, ckpt = _tiny_clip(tmp_path)
    enc = build_encoder(EncoderSpec("clip", arch=str(cfg_path), pretrained=str(ckpt)))
    assert enc.dim == 16 and enc.fingerprint == sha256_file(ckpt) and not enc.random_init
    assert enc.preprocess.size == 32 and enc.preprocess.mean == tuple(open_clip.OPENAI_DATASET_MEAN)
    ref = open_clip.create_model("tiny-clip-test", pretrained=str(ckpt)).eval()
    x = torch.stack([apply_preprocess(_photo(n), enc.preprocess) for n in ("chelsea", "coffee")])
    with torch.inference_mode():
        want = F.normalize(ref.encode_image(x), dim=-1)
        got = enc.forward(x)
    torch.testing.assert_close(got, want)
    with pytest.raises(PtgError, match="not a file"):
        build_encoder(EncoderSpec("clip", arch=str(cfg_path), pretrained=str(tmp_path / "missing.pt")))
    from ptg.pipeline.encoders import hub

    monkeypatch.setattr(hub, "unreachable", lambda url, timeout=0: None)  # the tag check as on a networked machine
    with pytest.raises(PtgError, match="no pretrained tag 'nope'"):
        build_encoder(EncoderSpec("clip", arch="ViT-B-32", pretrained="nope"))


def _tiny_blip2(root: Path):
    from transformers import Blip2Config, Blip2Model

    cfg = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                            encoder_hidden_size=32, vocab_size=100, max_position_embeddings=64),
        text_config=dict(model_type="opt", hidden_size=32, ffn_dim=64, num_hidden_layers=1, num_attention_heads=2,
                         vocab_size=100, word_embed_proj_dim=32, max_position_embeddings=64),
        num_query_tokens=4)
    torch.manual_seed(0)
    model = Blip2Model(cfg).eval()
    with torch.no_grad():
        model.query_tokens.normal_()  # non-zero queries, so a failed load would show
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(root)
    return model


def test_blip2_local_directory_matches_qformer_features(tmp_path):
    ref = _tiny_blip2(tmp_path / "blip2")
    enc = build_encoder(EncoderSpec("blip2", pretrained=str(tmp_path / "blip2")))
    assert enc.dim == 32 and enc.preprocess.resize == "squash" and enc.preprocess.size == 32
    x = torch.stack([apply_preprocess(_photo(n), enc.preprocess) for n in ("chelsea", "rocket")])
    with torch.inference_mode():
        out = ref.get_qformer_features(pixel_values=x)
        want = (out if isinstance(out, torch.Tensor) else out.last_hidden_state).mean(dim=1)
        got = enc.forward(x)
    torch.testing.assert_close(got, want)
    assert len(enc.fingerprint) == 64
    with pytest.raises(PtgError, match="not a directory"):
        build_encoder(EncoderSpec("blip2", pretrained=str(tmp_path / "absent")))


def _tiny_sd(root: Path) -> None:
    from diffusers import AutoencoderKL, UNet2DConditionModel

    torch.manual_seed(0)
    AutoencoderKL(block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
                  layers_per_block=1, sample_size=32).save_pretrained(root / "vae")
    UNet2DConditionModel(block_out_channels=(8, 16), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                         up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=8,
                         layers_per_block=1, norm_num_groups=4, attention_head_dim=2, sample_size=8,
                         in_channels=4, out_channels=4).save_pretrained(root / "unet")


def test_sd_local_directory_vae_and_unet_features(tmp_path):
    _tiny_sd(tmp_path / "sd")
    vae_only = build_encoder(EncoderSpec("sd", pretrained=str(tmp_path / "sd"), size=32))
    assert vae_only.dim == 16 + 12
    both = build_encoder(EncoderSpec("sd", pretrained=str(tmp_path / "sd"), size=32, timestep=500))
    assert both.dim == 16 + 12 + 16 and both.fingerprint != vae_only.fingerprint
    x = torch.stack([apply_preprocess(_photo(n), both.preprocess) for n in ("chelsea", "coffee")])
    with torch.inference_mode():
        a, b = both.forward(x), vae_only.forward(x)
        single = both.forward(x[1:])
        mu = vae_only.module["vae"].encode(x).latent_dist.mean
    torch.testing.assert_close(a[:, :28], b)  # the VAE part does not depend on the UNet option
    torch.testing.assert_close(b[:, 16:20], mu.mean(dim=(2, 3)))  # pooled posterior mean, as documented
    torch.testing.assert_close(single[0], a[1], rtol=1e-4, atol=1e-5)  # per-image noise: batch-independent
    with pytest.raises(PtgError, match="outside"):
        build_encoder(EncoderSpec("sd", pretrained=str(tmp_path / "sd"), timestep=5000))
    with pytest.raises(PtgError, match="no vae/config.json"):
        build_encoder(EncoderSpec("sd", pretrained=str(tmp_path)))


def test_unfetchable_hub_id_says_so_and_shows_the_local_option():
    # offline here; online the repo does not exist: either way the user learns how to pass a local copy
    with pytest.raises(PtgError, match=r"(cannot fetch the weights|offline: ).*[Pp]ass a local copy: --pretrained"):
        build_encoder(EncoderSpec("blip2", pretrained="ptg-tests/no-such-blip2-repo"))


@pytest.fixture
def unreachable_hub(tmp_path, monkeypatch):
    """A hub endpoint that refuses connections (port 9 on localhost) and an empty hub cache."""
    from ptg.pipeline.encoders import hub

    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))  # read once at its import
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_probed", {})
    return hub


@pytest.mark.parametrize("name", ["clip", "blip2", "sd"])
def test_offline_hub_encoders_say_offline_first_within_seconds(unreachable_hub, name):
    import os
    import time

    t0 = time.monotonic()
    with pytest.raises(PtgError) as info:
        build_encoder(EncoderSpec(name))
    took = time.monotonic() - t0
    msg = str(info.value)
    assert msg.startswith("offline: ") and "127.0.0.1:9" in msg and "Pass a local copy: --pretrained" in msg
    assert took < 5.0, f"{name}: offline detection took {took:.1f} s"
    assert "HF_HUB_OFFLINE" not in os.environ  # offline mode is restored after the attempt


def test_hub_probe_sees_an_answering_host_and_caches_the_verdict(unreachable_hub):
    import http.server
    import threading

    hub = unreachable_hub
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501: reachable
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/some/file"
        assert hub.unreachable(url) is None
        assert "did not answer" in hub.unreachable("http://127.0.0.1:9/x")
    finally:
        server.shutdown()
        server.server_close()
    assert hub.unreachable(url) is None  # cached per host: no second probe


def test_offline_mode_loads_a_cached_snapshot(unreachable_hub, tmp_path):
    # a repo already in the hub cache loads offline, through the real huggingface_hub cache lookup
    hub = unreachable_hub
    snap = tmp_path / "hf-cache" / "models--ptg-tests--tiny" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    refs = tmp_path / "hf-cache" / "models--ptg-tests--tiny" / "refs"
    refs.mkdir()
    (refs / "main").write_text("a" * 40)
    assert hub.snapshot("ptg-tests/tiny", "Tiny", "--pretrained DIR") == snap
