# Two commands do all set-up on a fresh machine:
#   make demo   create .venv if missing, install, run the main job (the shipped model) on the bundled sample data
#   make test   create .venv if missing, install, run the whole test suite
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.reuse-vos-installed

.PHONY: install demo train-cpu train-ttvos-cpu train-gttvos-cpu compare-bases train-warp-cpu train-tile-gate-cpu test test-fast test-kernels lint clean-venv

install: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# The demo, with the shipped model (weights/, trained on the CPU by `make train-cpu`; see the README's model
# card): the tau sweep on two real DAVIS 2016 val sequences of the bundled sample at the model's 360x640
# inference size, with the report and plot; the every-3 schedule merged into a comparison; an overlay video.
DEMO_RUN    ?= demo
DEMO_MODEL  ?= weights/gfrtm_rn18_dv2016_cpu.pth
DEMO_DAVIS   = data/samples/davis2016-sample

demo: $(STAMP)
	$(PY) evaluate.py --dset dv2016val --davis-root $(DEMO_DAVIS) --sequences blackswan,car-shadow \
		--model $(DEMO_MODEL) --dev cpu --TH 1.0 0.7 0.5 -1 --out results/$(DEMO_RUN)
	$(PY) evaluate.py --dset dv2016val --davis-root $(DEMO_DAVIS) --sequences blackswan,car-shadow \
		--model $(DEMO_MODEL) --dev cpu --policy every-k --every-k 3 --out results/$(DEMO_RUN)-every3
	$(PY) -m lib.evaluation.report results/$(DEMO_RUN) results/$(DEMO_RUN)-every3 --out results/$(DEMO_RUN)-compare
	$(PY) demo.py --video $(DEMO_DAVIS)/JPEGImages/480p/car-shadow \
		--mask $(DEMO_DAVIS)/Annotations/480p/car-shadow/00000.png \
		--model $(DEMO_MODEL) --dev cpu --TH 0.5 --out results/$(DEMO_RUN)/video-car-shadow
	@echo "plots: results/$(DEMO_RUN)/tradeoff.png, results/$(DEMO_RUN)-compare/tradeoff.png   overlay: results/$(DEMO_RUN)/video-car-shadow/overlay.mp4 (.gif)"

# The CPU training recipe of the shipped model (README, "The shipped model"): no download, resumable (run it
# again after an interruption), progress bars, TensorBoard events under runs/.
# 1. pre-train the ResNet-18 as a foreground/background segmenter of the DAVIS 2016 train frames (the stand-in
#    for ImageNet; 4 train sequences held out for validation);
# 2. train G-FRTM on it: 10 epochs with a small gate margin (m1 0.35: the gate learns to predict the IoU), then
#    4 more with the paper's margin schedule raised to m1 0.75 (Eq. 4: "direct the network to select the skip
#    path more often"), so that P_gate reaches the paper's tau range;
# 3. train the gate alone for 2 more epochs without the margin (m1 0: P_gate learns the IoU again, so that tau
#    trades reuse for accuracy step by step);
# 4. bundle one model file (G-FRTM + float16 backbone + the 360x640 inference size, which scored higher than the
#    240x432 of training on every held-out and bundled val sequence);
# 5. score it on the held-out train sequences and the bundled val sequences at tau 1 and 0.5.
TRAIN_DAVIS  ?= ../shared/data/davis2016-train
CPU_RUN      ?= cpu-dv2016
CPU_STEPS    ?= 1500
HOLDOUT       = dataset/splits/davis2016_train_holdout.txt
CPU_BACKBONE  = runs/$(CPU_RUN)-backbone
CPU_MODEL     = runs/$(CPU_RUN)/gfrtm_rn18_dv2016_cpu.pth
CPU_TRAIN     = $(PY) train.py --name $(CPU_RUN) --dset dv2016 --davis-root $(TRAIN_DAVIS) --holdout $(HOLDOUT) \
	--pretrained $(CPU_BACKBONE)/backbone.pth --dev cpu --size 240 432 --batch-size 4 --seq-len 6 --lr 3e-3 \
	--lr-step 8 --m2 0 --workers 0

train-cpu: $(STAMP)
	@test -f $(TRAIN_DAVIS)/ImageSets/2016/train.txt || { echo "error: $(TRAIN_DAVIS)/ImageSets/2016/train.txt not found: make train-cpu TRAIN_DAVIS=DIR"; exit 2; }
	$(PY) pretrain_backbone.py --davis-root $(TRAIN_DAVIS) --holdout $(HOLDOUT) --out $(CPU_BACKBONE) \
		--steps $(CPU_STEPS) --size 240 432 --batch-size 8
	$(CPU_TRAIN) --epochs 10 --m1 0.35 --marginEp 5
	$(CPU_TRAIN) --epochs 14 --m1 0.75 --marginEp 14
	$(CPU_TRAIN) --name $(CPU_RUN)-gate --initPth runs/$(CPU_RUN)/checkpoints/$(CPU_RUN)_ep0014.pth \
		--train-only convGS --epochs 2 --m1 0 --tmcache runs/$(CPU_RUN)/tmcache
	$(PY) -m lib.tools.checkpoint bundle runs/$(CPU_RUN)-gate/checkpoints/$(CPU_RUN)-gate_ep0002.pth $(CPU_MODEL) \
		--backbone $(CPU_BACKBONE)/backbone.pth --size 360 640
	$(PY) evaluate.py --dset dv2016train --davis-root $(TRAIN_DAVIS) --sequences $(shell paste -sd, $(HOLDOUT)) \
		--model $(CPU_MODEL) --dev cpu --TH 1.0 0.5 --out results/$(CPU_RUN)-holdout
	$(PY) evaluate.py --dset dv2016val --davis-root $(DEMO_DAVIS) --sequences blackswan,car-shadow \
		--model $(CPU_MODEL) --dev cpu --TH 1.0 0.5 --out results/$(CPU_RUN)-sample
	@echo "model: $(CPU_MODEL)   scores: results/$(CPU_RUN)-holdout/report.md, results/$(CPU_RUN)-sample/report.md"

# The CPU training recipe of the shipped TTVOS (docs/training.md, "TTVOS"): HRNet-W18-small-v1 from random
# initialisation, no download. 1. the Syn stage: 3-frame clips of DUTS-TR images moved by affine + thin-plate-spline
# deformations (14 epochs of 400 clips, about 45 minutes on 2 cores); 2. DAVIS 2016 train without the held-out
# sequences (6-frame clips, TTVOS_DV_EPOCHS epochs, about 2.6 minutes each); 3. bundle one model file (weights +
# the 360x640 inference size, which scored higher than the training size); 4. score it on the held-out train and
# the bundled val sequences. Resumable: run it again after an interruption. DUTS: SALIENCY_ROOT=DIR (the folder holding DUTS-TR, see ../shared/data/saliency or the README).
SALIENCY_ROOT   ?= data/duts
TTVOS_RUN       ?= ttvos-cpu
TTVOS_DV_EPOCHS ?= 12
TTVOS_MODEL      = runs/$(TTVOS_RUN)-dv/ttvos_hrnet_dv2016_cpu.pth
TTVOS_TRAIN      = $(PY) train.py --stage ttvos --size 240 432 --batch-size 4 --dev cpu --workers 1

train-ttvos-cpu: $(STAMP)
	@test -d $(SALIENCY_ROOT)/DUTS-TR || { echo "error: $(SALIENCY_ROOT)/DUTS-TR not found: make train-ttvos-cpu SALIENCY_ROOT=DIR"; exit 2; }
	@test -f $(TRAIN_DAVIS)/ImageSets/2016/train.txt || { echo "error: $(TRAIN_DAVIS)/ImageSets/2016/train.txt not found: make train-ttvos-cpu TRAIN_DAVIS=DIR"; exit 2; }
	$(TTVOS_TRAIN) --name $(TTVOS_RUN)-syn --dset duts --saliency-root $(SALIENCY_ROOT) --clips-per-epoch 400 \
		--seq-len 3 --lr 1e-3 --lr-step 30 --epochs 14 --tps 0.1
	$(TTVOS_TRAIN) --name $(TTVOS_RUN)-dv --dset dv2016 --davis-root $(TRAIN_DAVIS) --holdout $(HOLDOUT) \
		--initPth runs/$(TTVOS_RUN)-syn/checkpoints/$(TTVOS_RUN)-syn_ep0014.pth --seq-len 6 --lr 3e-4 --lr-step 15 \
		--epochs $(TTVOS_DV_EPOCHS)
	$(PY) -m lib.tools.checkpoint bundle \
		runs/$(TTVOS_RUN)-dv/checkpoints/$(TTVOS_RUN)-dv_ep$(shell printf %04d $(TTVOS_DV_EPOCHS)).pth $(TTVOS_MODEL) \
		--size 360 640
	$(PY) evaluate.py --dset dv2016train --davis-root $(TRAIN_DAVIS) --sequences $(shell paste -sd, $(HOLDOUT)) \
		--model $(TTVOS_MODEL) --dev cpu --out results/$(TTVOS_RUN)-holdout
	$(PY) evaluate.py --dset dv2016val --davis-root $(DEMO_DAVIS) --sequences blackswan,car-shadow \
		--model $(TTVOS_MODEL) --dev cpu --out results/$(TTVOS_RUN)-sample
	@echo "model: $(TTVOS_MODEL)   scores: results/$(TTVOS_RUN)-holdout/report.md, results/$(TTVOS_RUN)-sample/report.md"

# The CPU training recipe of the shipped G-TTVOS (docs/gttvos.md): the reuse modules (template matching on the
# backbone's stem, the gate, the delta-generator, the translator of the decoder's last state) trained on the
# shipped TTVOS, which stays as it is, on the DAVIS 2016 train sequences without the held-out ones (6-frame clips,
# 240x432, GTTVOS_EPOCHS epochs of about 1.4 minutes on 2 cores), the paper's gate loss without the margin
# (m1 0, as the shipped G-FRTM's gate stage); bundled at 360x640 and scored with a tau sweep. Resumable.
GTTVOS_RUN      ?= gttvos-cpu
GTTVOS_EPOCHS   ?= 10
GTTVOS_BASE     ?= weights/ttvos_hrnet_dv2016_cpu.pth
GTTVOS_MODEL     = runs/$(GTTVOS_RUN)/gttvos_hrnet_dv2016_cpu.pth
GTTVOS_TAUS     ?= 1.0 0.9 0.8 0.7 0.6 0.5 0.4 0.3

train-gttvos-cpu: $(STAMP)
	@test -f $(TRAIN_DAVIS)/ImageSets/2016/train.txt || { echo "error: $(TRAIN_DAVIS)/ImageSets/2016/train.txt not found: make train-gttvos-cpu TRAIN_DAVIS=DIR"; exit 2; }
	$(PY) train.py --stage gttvos --name $(GTTVOS_RUN) --dset dv2016 --davis-root $(TRAIN_DAVIS) --holdout $(HOLDOUT) \
		--initPth $(GTTVOS_BASE) --placement frame --size 240 432 --batch-size 4 --seq-len 6 --lr 1e-3 --lr-step 15 \
		--m1 0 --m2 0 --epochs $(GTTVOS_EPOCHS) --dev cpu --workers 1
	$(PY) -m lib.tools.checkpoint bundle \
		runs/$(GTTVOS_RUN)/checkpoints/$(GTTVOS_RUN)_ep$(shell printf %04d $(GTTVOS_EPOCHS)).pth $(GTTVOS_MODEL) \
		--size 360 640
	$(PY) evaluate.py --dset dv2016train --davis-root $(TRAIN_DAVIS) --sequences $(shell paste -sd, $(HOLDOUT)) \
		--model $(GTTVOS_MODEL) --dev cpu --TH $(GTTVOS_TAUS) --out results/$(GTTVOS_RUN)-holdout
	$(PY) evaluate.py --dset dv2016val --davis-root $(DEMO_DAVIS) --sequences blackswan,car-shadow \
		--model $(GTTVOS_MODEL) --dev cpu --TH $(GTTVOS_TAUS) --out results/$(GTTVOS_RUN)-sample
	@echo "model: $(GTTVOS_MODEL)   scores: results/$(GTTVOS_RUN)-holdout/report.md, results/$(GTTVOS_RUN)-sample/report.md"

# G-FRTM and G-TTVOS side by side (README, "G-FRTM and G-TTVOS side by side"): both shipped models at their 360x640,
# the gate's tau sweep, the ground-truth oracle, every-k, the flow-warped every-k and warp-error, copy and fusion
# (and sparse-gate, G-FRTM only: G-TTVOS has no shallow stages to tile), on the held-out train sequences and on the
# bundled val pair; one report and plot per set of sequences (about 50 minutes on 2 cores; evaluate.py resumes, so
# an interrupted run goes on where it stopped).
COMPARE_OUT    ?= results/compare-bases
COMPARE_GFRTM  ?= weights/gfrtm_rn18_dv2016_cpu.pth
COMPARE_GTTVOS ?= weights/gttvos_hrnet_dv2016_cpu.pth
COMPARE_SETS    = holdout:dv2016train:$(TRAIN_DAVIS):$(shell paste -sd, $(HOLDOUT)) \
                  sample:dv2016val:$(DEMO_DAVIS):blackswan,car-shadow

compare-bases: $(STAMP)
	@set -e; for set in $(COMPARE_SETS); do \
	  name=$$(echo $$set | cut -d: -f1); dset=$$(echo $$set | cut -d: -f2); root=$$(echo $$set | cut -d: -f3); \
	  seqs=$$(echo $$set | cut -d: -f4); folders=""; \
	  for net in gfrtm:$(COMPARE_GFRTM) gttvos:$(COMPARE_GTTVOS); do \
	    tag=$${net%%:*}; model=$${net#*:}; out=$(COMPARE_OUT)/$$name/$$tag; \
	    run() { $(PY) evaluate.py --dset $$dset --davis-root $$root --sequences $$seqs --model $$model --dev cpu "$$@"; }; \
	    run --TH 1.0 0.9 0.8 0.7 0.6 0.5 0.45 0.4 0.3 --out $$out-gate; \
	    run --policy oracle --TH 0.9 0.8 0.7 0.6 0.5 --out $$out-oracle; \
	    for k in 2 3 5; do run --policy every-k --every-k $$k --out $$out-every-$$k; done; \
	    for k in 3 5; do run --policy warp-every-k --every-k $$k --out $$out-warp-every-$$k; done; \
	    run --policy copy --TH 0.6 0.5 --out $$out-copy; \
	    run --policy fusion --TH 0.5 --TH2 0.8 --out $$out-fusion; \
	    run --policy warp-error --TH 0.97 0.95 --out $$out-warp-error; \
	    folders="$$folders $$out-gate $$out-oracle $$out-every-2 $$out-every-3 $$out-every-5 $$out-warp-every-3 \
	      $$out-warp-every-5 $$out-copy $$out-fusion $$out-warp-error"; \
	    if [ $$tag = gfrtm ]; then run --policy sparse-gate --TH 0.5 --out $$out-sparse-gate; \
	      folders="$$folders $$out-sparse-gate"; fi; \
	  done; \
	  $(PY) -m lib.evaluation.report $$folders --out $(COMPARE_OUT)/$$name; \
	done
	@echo "reports: $(COMPARE_OUT)/holdout/report.md, $(COMPARE_OUT)/sample/report.md (and tradeoff.png beside each)"

# The learned warp correction (README, "Flow-warped reuse"): DAVIS 2016 train without the held-out sequences,
# 12 epochs of 2048 (key, frame) pairs at the shipped model's 240x432 (about 15 minutes on 2 cores; resumable),
# then the warp policies with it on the held-out and the bundled val sequences.
WARP_RUN     ?= warp_corrector_dv2016
WARP_WEIGHTS  = runs/$(WARP_RUN)/warp_corrector.pth

train-warp-cpu: $(STAMP)
	@test -f $(TRAIN_DAVIS)/ImageSets/2016/train.txt || { echo "error: $(TRAIN_DAVIS)/ImageSets/2016/train.txt not found: make train-warp-cpu TRAIN_DAVIS=DIR"; exit 2; }
	$(PY) train.py --stage warp-corrector --name $(WARP_RUN) --dset dv2016 --davis-root $(TRAIN_DAVIS) \
		--holdout $(HOLDOUT) --dev cpu --workers 1 --epochs 12 --lr-step 9
	$(PY) evaluate.py --dset dv2016train --davis-root $(TRAIN_DAVIS) --sequences $(shell paste -sd, $(HOLDOUT)) \
		--model $(DEMO_MODEL) --dev cpu --policy warp-every-k --every-k 3 --warp-refine learned \
		--warp-corrector $(WARP_WEIGHTS) --out results/$(WARP_RUN)-holdout
	$(PY) evaluate.py --dset dv2016val --davis-root $(DEMO_DAVIS) --sequences blackswan,car-shadow \
		--model $(DEMO_MODEL) --dev cpu --policy warp-every-k --every-k 3 --warp-refine learned \
		--warp-corrector $(WARP_WEIGHTS) --out results/$(WARP_RUN)-sample
	@echo "weights: $(WARP_WEIGHTS)   scores: results/$(WARP_RUN)-holdout/report.md, results/$(WARP_RUN)-sample/report.md"

# The learned tile gate of the sparse path (README, "Sparse refinement"): the shipped model's reuse-path outputs
# on DAVIS 2016 train (collected once into runs/, about 10 minutes), then 40 quick epochs with SpVOS's sparsity
# loss, then sparse-gate with it on the bundled val sequences.
TILE_RUN     ?= tile_gate_dv2016
TILE_WEIGHTS  = runs/$(TILE_RUN)/tile_gate.pth

train-tile-gate-cpu: $(STAMP)
	@test -f $(TRAIN_DAVIS)/ImageSets/2016/train.txt || { echo "error: $(TRAIN_DAVIS)/ImageSets/2016/train.txt not found: make train-tile-gate-cpu TRAIN_DAVIS=DIR"; exit 2; }
	$(PY) train.py --stage tile-gate --name $(TILE_RUN) --dset dv2016 --davis-root $(TRAIN_DAVIS) \
		--holdout $(HOLDOUT) --model $(DEMO_MODEL) --dev cpu
	$(PY) evaluate.py --dset dv2016val --davis-root $(DEMO_DAVIS) --sequences blackswan,car-shadow \
		--model $(DEMO_MODEL) --dev cpu --policy sparse-gate --sparse-select learned --tile-gate $(TILE_WEIGHTS) \
		--TH 0.7 --out results/$(TILE_RUN)-sample
	@echo "weights: $(TILE_WEIGHTS)   scores: results/$(TILE_RUN)-sample/report.md"

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -q

# The edit loop: everything but the tests marked slow (end-to-end runs, real subprocesses); about a minute.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

# The numerically sensitive tests again under other CPUs' kernels (tests/numerics.py): PyTorch's AVX2 kernels and
# oneDNN limited to AVX2 (what an AVX2-only machine runs), then PyTorch's scalar kernels, oneDNN SSE4.1 and oneDNN
# off, 1 thread. Every float32 bound must hold on all of them.
NUMERIC_TESTS = tests/models tests/lib/engine tests/equivalence tests/trainers/test_losses.py tests/trainers/test_recurrent.py \
	tests/test_seeded_backbone.py
test-kernels: $(STAMP)
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest -q $(NUMERIC_TESTS)
	ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 REUSE_VOS_TEST_MKLDNN=0 OMP_NUM_THREADS=1 \
		$(PY) -m pytest -q $(NUMERIC_TESTS)

lint: $(STAMP)
	$(PY) -m ruff check .

clean-venv:
	rm -rf $(VENV)
