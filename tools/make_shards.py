#!/usr/bin/env python
"""Turn raw corpora into mmssl shards (mmssl.data.ingest): run with --help for the commands.

    python tools/make_shards.py images     SRC_DIR OUT   # first-level subfolder = class
    python tools/make_shards.py captions   TABLE   OUT   # csv/tsv/jsonl: path + caption columns
    python tools/make_shards.py videos     SRC     OUT   # folder of classes, or a table
    python tools/make_shards.py audio      SRC     OUT   # folder of classes, or a table
    python tools/make_shards.py webdataset SRC     OUT   # re-shard + validate existing tars (img2dataset, ...)
"""
import sys

from mmssl.data.ingest import main

if __name__ == "__main__":
    sys.exit(main())
