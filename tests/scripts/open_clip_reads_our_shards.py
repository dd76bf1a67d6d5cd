"""Run with open_clip's training extra (webdataset 0.2.x) first on PYTHONPATH: open_clip_train reads
a make_shards folder with its own WebDataset pipeline, and mmssl's loader works in the same process.
Prints one JSON line."""
import argparse
import json
import os
import sys

import open_clip
import webdataset
from open_clip_train.data import get_wds_dataset

from mmssl.data import ImageField, TextField, build_loader, eval_transform

folder = sys.argv[1]
manifest = json.load(open(os.path.join(folder, "manifest.json")))
shards = [os.path.join(folder, s["name"]) for s in manifest["splits"]["train"]["shards"]]
args = argparse.Namespace(train_data="::".join(shards), val_data=None, dataset_resampled=False, train_num_samples=None,
                          train_data_upsampling_factors=None, seed=0, batch_size=4, workers=0, world_size=1,
                          distributed=False)
_, _, preprocess = open_clip.create_model_and_transforms("RN50", pretrained=None)
info = get_wds_dataset(args, preprocess, True, tokenizer=open_clip.get_tokenizer("RN50"))
open_clip_keys = 0
for images, texts in info.dataloader:
    open_clip_keys += images.shape[0]
ours = build_loader(folder, [ImageField(eval_transform(32)), TextField()], 1, shuffle=False, drop_last=False)
print(json.dumps({"webdataset": webdataset.__file__, "open_clip_samples": open_clip_keys,
                  "image_shape": list(images.shape), "mmssl_samples": sum(len(b["key"]) for b in ours),
                  "manifest_train": manifest["splits"]["train"]["count"]}))
