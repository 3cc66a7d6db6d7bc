# Two commands do all set-up on a fresh machine:
#   make demo   create .venv if missing, install, run the main job on the bundled sample data
#   make test   create .venv if missing, install, run the whole test suite
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.reuse-vos-installed

.PHONY: install demo test test-kernels lint clean-venv

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# The demo: train G-FRTM briefly on generated videos (CPU, random backbone: no weights can be downloaded),
# then run the tau sweep on the bundled real DAVIS 2016 sample and write an overlay video. The numbers
# come from a tiny CPU-trained model; they show the pipeline, not the paper's accuracy.
DEMO_RUN    ?= demo
DEMO_EPOCHS ?= 3
DEMO_CKPT    = runs/$(DEMO_RUN)/checkpoints/$(DEMO_RUN)_ep$(shell printf %04d $(DEMO_EPOCHS)).pth
DEMO_DAVIS   = data/samples/davis2016-sample

demo: $(STAMP)
	$(PY) train.py --name $(DEMO_RUN) --dset synthetic --dev cpu --pretrained none \
		--size 240 432 --seq-len 4 --batch-size 4 --epochs $(DEMO_EPOCHS) --workers 0
	$(PY) evaluate.py --dset dv2016val --davis-root $(DEMO_DAVIS) --sequences blackswan,car-shadow \
		--model $(DEMO_CKPT) --pretrained none --dev cpu --TH 1.0 0.7 0.5 -1 --out results/$(DEMO_RUN)
	$(PY) evaluate.py --dset dv2016val --davis-root $(DEMO_DAVIS) --sequences blackswan,car-shadow \
		--model $(DEMO_CKPT) --pretrained none --dev cpu --policy every-k --every-k 3 --out results/$(DEMO_RUN)-every3
	$(PY) -m lib.report results/$(DEMO_RUN) results/$(DEMO_RUN)-every3 --out results/$(DEMO_RUN)-compare
	$(PY) demo.py --video $(DEMO_DAVIS)/JPEGImages/480p/car-shadow \
		--mask $(DEMO_DAVIS)/Annotations/480p/car-shadow/00000.png \
		--model $(DEMO_CKPT) --pretrained none --dev cpu --TH 0.7 --out results/$(DEMO_RUN)/video-car-shadow
	@echo "plots: results/$(DEMO_RUN)/tradeoff.png, results/$(DEMO_RUN)-compare/tradeoff.png   overlay: results/$(DEMO_RUN)/video-car-shadow/overlay.mp4 (.gif)"

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# The numerically sensitive tests again under other CPUs' kernels (tests/numerics.py): PyTorch's AVX2 kernels and
# oneDNN limited to AVX2 (what an AVX2-only machine runs), then PyTorch's scalar kernels, oneDNN SSE4.1 and oneDNN
# off, 1 thread. Every float32 bound must hold on all of them.
NUMERIC_TESTS = tests/models tests/lib/test_tracker.py tests/test_official_equivalence_engine.py \
	tests/test_official_equivalence_modules.py tests/test_official_equivalence_target_model.py \
	tests/test_official_equivalence_training.py tests/trainers/test_losses.py tests/trainers/test_recurrent.py
test-kernels: $(STAMP)
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -q $(NUMERIC_TESTS)
	ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 REUSE_VOS_TEST_MKLDNN=0 OMP_NUM_THREADS=1 \
		$(PY) -m pytest -q $(NUMERIC_TESTS)

lint: $(STAMP)
	$(PY) -m ruff check .

clean-venv:
	rm -rf $(VENV)
