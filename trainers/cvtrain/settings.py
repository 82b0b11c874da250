"""Tunables of the trainers, in one place. Each has the reason for its value.

Run-time choices a user makes per run live in run.json (see config.py); these are the
knobs that a developer tunes once for the platform.
"""

# --- event protocol -------------------------------------------------------------------
# Bumped only on a breaking change of schema/trainer-events.schema.json; the API refuses
# versions it does not know.
EVENT_PROTOCOL_VERSION = 1
# Lines of a traceback kept in a `failed` event: enough to see the raising frame and its
# callers without flooding the API's error column.
TRACEBACK_TAIL_LINES = 30

# --- exit codes (documented in README and schema) ---------------------------------------
EXIT_OK = 0  # completed, or stopped gracefully at a checkpoint
EXIT_FAILED = 1  # unexpected error while training/evaluating/exporting
EXIT_CONFIG = 2  # invalid run.json or command line; nothing was done
EXIT_DATASET = 3  # dataset missing, unreadable, or too many corrupt samples
EXIT_FRAMEWORK = 4  # framework (ultralytics, transformers, custom) not importable
EXIT_DIVERGED = 5  # loss became NaN/inf

# --- optimisation ------------------------------------------------------------------------
# Classic SGD momentum for detection/classification from torchvision's reference scripts.
SGD_MOMENTUM = 0.9
# Adam betas: PyTorch defaults, stated so a change is deliberate.
ADAM_BETAS = (0.9, 0.999)
# Warm-up starts from this fraction of the base LR; 0.001 is what torchvision's detection
# reference uses, and from-scratch detectors diverge with a full LR on step one.
WARMUP_START_FACTOR = 0.001
# Cosine decay ends at this fraction of the base LR rather than zero so the last epoch
# still learns something.
COSINE_FINAL_FACTOR = 0.01

# --- data ----------------------------------------------------------------------------------
# Value used for letterbox padding (mid-grey, as YOLO tooling does): neutral for the
# normalisation of every family.
PAD_VALUE = 114
# Scale jitter range for training (zoom out/in of the whole image).
SCALE_JITTER = (0.75, 1.25)
# Horizontal flip probability.
HFLIP_PROB = 0.5
# Maximum relative change of brightness, contrast and saturation in colour jitter.
COLOR_JITTER = 0.25
# Boxes narrower or shorter than this (pixels, after augmentation) are dropped: torchvision
# detectors assert on degenerate boxes.
MIN_BOX_SIDE = 1.0
# Batches each DataLoader worker prepares ahead: slack for uneven decode times (big or
# crowded images) at little memory cost, since batches are uint8.
PREFETCH_FACTOR = 4
# Slots of the training batch ring (datasets/batch_ring.py) beyond the batches in flight: the
# copy to the GPU of a batch handed out this many steps ago must be done before its slot is
# refilled, so the CPU may run this many steps ahead of the GPU's copies before it waits.
RING_SPARE_SLOTS = 4
# `num_workers: "auto"` uses this many workers at most. Estimate, to be checked with
# bench/gpu_bench.py: a worker decodes and augments a 224-320 px JPEG in ~1-2 ms, so a dozen
# outrun one GPU on these models, and every extra worker costs memory and start-up time.
AUTO_MAX_WORKERS = 12
# Image file extensions the readers accept (lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

# --- detection ----------------------------------------------------------------------------
# Score threshold used by detectors at validation time: COCO mAP needs low-score detections
# (the evaluator keeps the top 100 per image), so use the value torchvision's COCO numbers use.
DETECTION_SCORE_THRESH = 0.05
# Detections kept per image: COCOeval never looks past 100.
DETECTIONS_PER_IMAGE = 100

# --- ONNX export ---------------------------------------------------------------------------
# Opset 13: OpenCV 4.6's importer and onnxruntime both run it, and torchvision's detection
# graphs export with it on torch 1.13 (on 2.x the GPU benchmark's ssdlite export checks it).
ONNX_OPSET = 13
# An export is "verified" when the runtime's outputs match torch within this tolerance,
# relative to the largest reference magnitude (floor 1): float32 reorderings stay far below.
ONNX_RTOL = 1e-3
# Batch used to check dynamic-batch classifiers (a batch of 1 would hide batching bugs).
ONNX_VERIFY_BATCH = 2

# --- cvdet (families/cvdet: the package's own YOLO-style detector) ---------------------------
# Post-processing at validation and in the ONNX consumers' reference code. COCO mAP rewards
# low-confidence detections (the evaluator keeps the 100 best per image), so the threshold is
# low, as in YOLO validators; 0.7 IoU NMS is what those validators use with task-aligned heads,
# whose duplicate boxes score far below the best one.
CVDET_SCORE_THRESH = 0.001
CVDET_NMS_IOU = 0.7
# (cell, class) candidates ranked before NMS: bounds NMS cost on an untrained model, where
# every cell passes the threshold.
CVDET_PRE_NMS_TOPK = 1000
# Weight averaging (EMA) for evaluation and export: decay d * (1 - exp(-updates / tau)), ramping
# up so the average forgets the random init (YOLO practice: d 0.9999, tau 2000 steps, for runs of
# ~100k steps). A short run would then average over all of itself, early weights included, so
# the averaging window 1 / (1 - decay) and tau are capped at this share of the run's steps.
CVDET_EMA_DECAY = 0.9999
CVDET_EMA_TAU = 2000
CVDET_EMA_RUN_FRACTION = 0.05
# Mosaic (four training images tiled around a random centre) for all but the last epochs: it
# multiplies the objects and contexts per step; the last epochs train on whole images, as the
# validation set looks (YOLO's close_mosaic). Share of the epochs without mosaic (at least 1).
CVDET_MOSAIC_PROB = 1.0
CVDET_CLOSE_MOSAIC_FRACTION = 0.2
# Each tile's long side, as a fraction of the canvas side (random in this range), and the centre
# of the four tiles, as a fraction of the side.
CVDET_MOSAIC_TILE_SCALE = (0.5, 1.0)
CVDET_MOSAIC_CENTRE = (0.3, 0.7)
# A box cut by the canvas edge is kept when at least this share of its area is visible.
CVDET_MOSAIC_MIN_VISIBLE = 0.2
