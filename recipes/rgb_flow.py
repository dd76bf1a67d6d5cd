#!/usr/bin/env python
"""RGB-flow correspondence on video shards (mmssl.objectives.rgb_flow): a clip's frames against its
optical flow, contrastive both ways (CMC).

    accelerate launch recipes/rgb_flow.py --config recipes/configs/rgb_flow_demo.yaml key=value ...

Keys: mmssl.recipe_video.VIDEO_DEFAULTS plus
  backbone        the RGB frame encoder spec (mmssl.models.encoders), probed after training
  flow_encoder    the flow encoder spec; its input has 2 x flow.pairs channels
  flow.pairs      consecutive frame pairs whose Farneback flow is stacked (OpenCV, in the data workers)
  flow.unit_px    flow is divided by this many pixels
  rgb_flow.*      eval_frames, embed_dim, hidden_dim, temperature

After training, `encoder/` holds the RGB frame encoder (a transformers backbone loads with AutoModel).
"""

from mmssl.cli import run_main
from mmssl.config import Key, constructor_keys, set_defaults
from mmssl.models.encoders import build_encoder
from mmssl.objectives.rgb_flow import RGBFlow
from mmssl.recipe_image import SMALL_RESNET
from mmssl.recipe_video import VIDEO_DEFAULTS, run_video_recipe

DEFAULTS = set_defaults(VIDEO_DEFAULTS, {
    "output_dir": "runs/rgb_flow", "image_size": 64,
    "backbone": Key(SMALL_RESNET, "RGB frame encoder spec (mmssl.models.encoders)"),
    "flow_encoder": Key(SMALL_RESNET, "flow encoder spec; its config's num_channels is set to 2 x flow.pairs"),
    "flow": {"pairs": Key(4, "consecutive frame pairs whose flow is stacked", min=1),
             "unit_px": Key(2.0, "flow is divided by this many pixels", above=0)},
    "rgb_flow": constructor_keys(RGBFlow)})


def objective(cfg):
    spec = cfg["flow_encoder"]
    flow = build_encoder({**spec, "config": {**spec.get("config", {}), "num_channels": 2 * cfg["flow"]["pairs"]}})
    return RGBFlow(build_encoder(cfg["backbone"]), flow, **cfg["rgb_flow"])


def train_field(cfg):
    from mmssl.data.flow import FlowField

    return FlowField(cfg["num_frames"], cfg["stride"], cfg["image_size"], train=True, min_frames=cfg["min_frames"],
                     pairs=cfg["flow"]["pairs"], unit_px=cfg["flow"]["unit_px"])


def main(argv=None) -> int:
    return run_video_recipe(argv, DEFAULTS, objective, train_field=train_field)


if __name__ == "__main__":
    run_main(main)
