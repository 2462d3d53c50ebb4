"""Every config key of mmmask with its default value, documented in place.

Experiments are YAML files under ``configs/`` that override a few keys (``_BASE_`` inheritance);
tools take trailing ``KEY VALUE`` overrides. A key that is not defined here is an error.
"""

from .config import CfgNode as CN

_C = CN()
# Version of the config format; bumped when keys are renamed.
_C.VERSION = 1

# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
_C.MODEL = CN()
# Name in META_ARCH_REGISTRY: OpenVocabSegmentor, CLIPPretrainer, SAMTrainer, VQTokenizer, CM3.
_C.MODEL.META_ARCHITECTURE = "OpenVocabSegmentor"
# "cpu", "cuda" or "auto" (cuda when available).
_C.MODEL.DEVICE = "auto"
# Weights of the whole model (safetensors or a state-dict file); "" = none. The shipped Shapes-OV
# weights are named "shipped:<file>" and resolve inside the package (mmmask/weights/).
_C.MODEL.WEIGHTS = ""
# A file whose mask_generator.* tensors replace those of MODEL.WEIGHTS when a run starts or a
# Predictor loads (a trained model's classifiers with the generator of another run); "" = none.
_C.MODEL.GENERATOR_WEIGHTS = ""

# Which parts are trained (the staged recipe: generator first, then the classifier).
_C.MODEL.TRAIN_GENERATOR = True
_C.MODEL.TRAIN_CLASSIFIER = False

# ---- CLIP (frozen image trunk + text tower) -------------------------------------------------
_C.MODEL.CLIP = CN()
# open_clip model name: any built-in name (ViT-B-16, convnext_large_d_320, ...) or one of the
# JSON architectures under configs/clip/ (registered with open_clip at import).
_C.MODEL.CLIP.MODEL_NAME = "mmmask-shapes-convnext"
# open_clip pretrained tag (e.g. "laion2b_s29b_b131k_ft_soup", needs network once) or a local
# file (.safetensors / .pt / .bin state dict). "" = random init (training from scratch, tests).
_C.MODEL.CLIP.PRETRAINED = ""
# Keep the CLIP weights frozen during segmentation training.
_C.MODEL.CLIP.FROZEN = True
# Prompt templates for the text classifier: "shapes", "imagenet" (ViLD-style ensemble) or "single".
_C.MODEL.CLIP.PROMPT_TEMPLATES = "shapes"
# Image size CLIP was trained at (used by crop-and-classify baselines and pretraining).
_C.MODEL.CLIP.IMAGE_SIZE = 64
# Feature names of the trunk handed to the mask generator (multi-scale, finest first).
_C.MODEL.CLIP.FEATURES = ["res2", "res3", "res4", "res5"]
# Entries kept in the text-embedding cache (keyed by prompt); 0 disables it.
_C.MODEL.CLIP.TEXT_CACHE_SIZE = 4096
# The dense map for the mask classifier (clip_dense) comes from a second trunk pass over the image
# resized by this factor (2.0 = twice finer map, objects twice larger for CLIP); 1.0 = the same
# pass as the generator's features.
_C.MODEL.CLIP.DENSE_INPUT_SCALE = 1.0
# CLIPDenseDistiller (region self-distillation of the dense map): teacher crops are resized to
# DISTILL_CROP_SIZE (the pretraining image size); boxes are the cells of a random m x n grid,
# m, n in 1..DISTILL_MAX_GRID.
_C.MODEL.CLIP.DISTILL_CROP_SIZE = 64
_C.MODEL.CLIP.DISTILL_MAX_GRID = 4

# ---- Mask generator -------------------------------------------------------------------------
_C.MODEL.MASK_GENERATOR = CN()
# The segmentor's own generator, a name in MASK_GENERATOR_REGISTRY that runs on CLIP features
# ("PMP"); SAM (MODEL.SAM) joins at inference instead (`--generator sam`).
_C.MODEL.MASK_GENERATOR.NAME = "PMP"

# PMP: Mask2Former-style pixel decoder + masked-attention query decoder, with cross-attention from
# the queries to the vocabulary's text tokens (TEXT_CROSS_ATTN False = plain query decoder).
_C.MODEL.PMP = CN()
_C.MODEL.PMP.NUM_QUERIES = 50
_C.MODEL.PMP.HIDDEN_DIM = 128
_C.MODEL.PMP.MASK_DIM = 128
_C.MODEL.PMP.NHEADS = 4
_C.MODEL.PMP.DIM_FEEDFORWARD = 512
# Decoder layers (cycled over the three coarsest feature scales, as in Mask2Former).
_C.MODEL.PMP.DEC_LAYERS = 6
_C.MODEL.PMP.PRE_NORM = False
_C.MODEL.PMP.DROPOUT = 0.0
# Conv layers of the pixel decoder (FPN-style) per level.
_C.MODEL.PMP.PIXEL_DECODER_CONVS = 1
# PMP's cross-attention from the queries to the vocabulary text tokens in every decoder layer.
_C.MODEL.PMP.TEXT_CROSS_ATTN = True
# Auxiliary losses on every decoder layer (deep supervision).
_C.MODEL.PMP.DEEP_SUPERVISION = True
# Loss weights and the "no object" class weight.
_C.MODEL.PMP.CLASS_WEIGHT = 2.0
_C.MODEL.PMP.MASK_WEIGHT = 5.0
_C.MODEL.PMP.DICE_WEIGHT = 5.0
_C.MODEL.PMP.NO_OBJECT_WEIGHT = 0.1
# Point-sampled mask losses (uncertainty-based importance sampling); 0 = use every pixel.
_C.MODEL.PMP.TRAIN_NUM_POINTS = 3136
_C.MODEL.PMP.OVERSAMPLE_RATIO = 3.0
_C.MODEL.PMP.IMPORTANCE_SAMPLE_RATIO = 0.75
# Initial temperature of the generator's cosine class logits (learned, capped at 100).
_C.MODEL.PMP.LOGIT_SCALE = 20.0

# SAM (segment-anything): a second mask generator, automatic or prompted.
_C.MODEL.SAM = CN()
# "vit_b", "vit_l", "vit_h" (official shapes) or "custom" (the ENCODER_* keys below).
_C.MODEL.SAM.VARIANT = "custom"
# Local SAM checkpoint (official .pth or safetensors); "" = random init.
_C.MODEL.SAM.CHECKPOINT = ""
_C.MODEL.SAM.IMAGE_SIZE = 256
_C.MODEL.SAM.ENCODER_EMBED_DIM = 96
_C.MODEL.SAM.ENCODER_DEPTH = 2
_C.MODEL.SAM.ENCODER_NUM_HEADS = 4
_C.MODEL.SAM.ENCODER_GLOBAL_ATTN_INDEXES = [1]
_C.MODEL.SAM.PATCH_SIZE = 16
_C.MODEL.SAM.PROMPT_EMBED_DIM = 128
# Window size of the encoder's windowed-attention blocks (official: 14).
_C.MODEL.SAM.WINDOW_SIZE = 14
# Two-way transformer of the mask decoder: MLP width and heads (official: 2048, 8).
_C.MODEL.SAM.DECODER_MLP_DIM = 2048
_C.MODEL.SAM.DECODER_NUM_HEADS = 8
# Automatic mask generator settings (those of SamAutomaticMaskGenerator).
_C.MODEL.SAM.POINTS_PER_SIDE = 16
_C.MODEL.SAM.POINTS_PER_BATCH = 64
_C.MODEL.SAM.PRED_IOU_THRESH = 0.88
_C.MODEL.SAM.STABILITY_SCORE_THRESH = 0.95
_C.MODEL.SAM.STABILITY_SCORE_OFFSET = 1.0
_C.MODEL.SAM.BOX_NMS_THRESH = 0.7
_C.MODEL.SAM.CROP_N_LAYERS = 0
_C.MODEL.SAM.MIN_MASK_REGION_AREA = 0
# SAM training: what to freeze, prompts sampled from GT masks, losses.
_C.MODEL.SAM.FREEZE_IMAGE_ENCODER = False
_C.MODEL.SAM.FREEZE_PROMPT_ENCODER = False
_C.MODEL.SAM.NUM_CORRECTION_CLICKS = 2
_C.MODEL.SAM.BOX_PROMPT_PROB = 0.5
_C.MODEL.SAM.FOCAL_WEIGHT = 20.0
_C.MODEL.SAM.DICE_WEIGHT = 1.0
_C.MODEL.SAM.IOU_WEIGHT = 1.0
# GT masks sampled per image per training step (prompts are drawn from these).
_C.MODEL.SAM.MAX_MASKS_PER_IMAGE = 8
# Box prompts are jittered by up to this fraction of the box side per coordinate (max 20 px).
_C.MODEL.SAM.BOX_JITTER = 0.1

# ---- Mask classifier ------------------------------------------------------------------------
_C.MODEL.MASK_CLASSIFIER = CN()
# Name in MASK_CLASSIFIER_REGISTRY: "MaskAdapter", "MaskPooling" or "MaskCrop".
_C.MODEL.MASK_CLASSIFIER.NAME = "MaskAdapter"

_C.MODEL.MASK_ADAPTER = CN()
# Channels of the adapter's ConvNeXt-style blocks.
_C.MODEL.MASK_ADAPTER.HIDDEN_DIM = 128
_C.MODEL.MASK_ADAPTER.NUM_BLOCKS = 2
# K semantic activation maps per mask.
_C.MODEL.MASK_ADAPTER.NUM_MAPS = 8
# Masks are downscaled to the CLIP dense map size times this factor before fusion.
_C.MODEL.MASK_ADAPTER.MASK_DOWNSAMPLE = 4
# IoU threshold for matching predicted masks to ground truth (IoU matching, not Hungarian).
_C.MODEL.MASK_ADAPTER.IOU_THRESHOLD = 0.7
# Mask consistency loss weight and classification loss weight.
_C.MODEL.MASK_ADAPTER.CONSISTENCY_WEIGHT = 1.0
_C.MODEL.MASK_ADAPTER.CLASS_WEIGHT = 1.0
# Training masks: "gt" (warm-up on ground-truth masks) or "mixed" (GT + predicted masks).
_C.MODEL.MASK_ADAPTER.TRAIN_MASKS = "gt"
# Predicted masks per image used in mixed training.
_C.MODEL.MASK_ADAPTER.NUM_PRED_MASKS = 16
# Initial temperature of the cosine logits (learned).
_C.MODEL.MASK_ADAPTER.LOGIT_SCALE = 50.0
# Masks run through the adapter's conv blocks in chunks of this many (bounds memory); 0 = all.
_C.MODEL.MASK_ADAPTER.CHUNK_SIZE = 64
# Weight of the void class in the adapter's cross-entropy (unmatched predicted masks).
_C.MODEL.MASK_ADAPTER.VOID_WEIGHT = 0.1
# Mixed training: predicted masks matching no GT are labelled void (True) or ignored (False).
_C.MODEL.MASK_ADAPTER.UNMATCHED_AS_VOID = True

# MaskCrop (crop-and-classify baseline): each mask's square box, CONTEXT times the mask's extent,
# resized to MODEL.CLIP.IMAGE_SIZE and encoded by CLIP's image tower; BACKGROUND = share of the
# pixels outside the mask kept (1 = the box as is, 0 = mean pixel); BATCH_SIZE crops per forward.
_C.MODEL.MASK_CROP = CN()
_C.MODEL.MASK_CROP.CONTEXT = 1.5
_C.MODEL.MASK_CROP.BACKGROUND = 0.0
_C.MODEL.MASK_CROP.BATCH_SIZE = 256
# Test-time ensemble: more box sizes (each >= 1) whose crops' embeddings are averaged with
# CONTEXT's, FLIP to average in every crop mirrored left-right, and ROTATIONS (degrees out of 90,
# 180, 270) every crop turned by those angles (for data with no up and down, e.g. Shapes-OV with
# (180,)). Each view costs one more CLIP forward per mask.
_C.MODEL.MASK_CROP.EXTRA_CONTEXTS = ()
_C.MODEL.MASK_CROP.FLIP = False
_C.MODEL.MASK_CROP.ROTATIONS = ()
# Initial temperature of MaskCrop's cosine logits (learned when MaskCrop is trained).
_C.MODEL.MASK_CROP.LOGIT_SCALE = 20.0
# Inference: > 0 also names every mask with MaskCrop and fuses the two classifiers' class
# distributions geometrically, p ~ p_classifier^(1-w) * p_crop^w (w = FUSION_WEIGHT; 0 = off).
_C.MODEL.MASK_CROP.FUSION_WEIGHT = 0.0
# Crops go through MaskCrop's own copy of CLIP's image tower (initialised from the backbone's,
# saved with the model) instead of the frozen backbone (the text side: OWN_TEXT_TOWER). TRAIN trains
# that copy (with the logit scale and void logit) on the classifier's training masks, as a
# mask-adapted CLIP: ground-truth masks of the seen classes, plus predicted masks with
# MODEL.MASK_ADAPTER.TRAIN_MASKS "mixed" (unmatched ones as void).
_C.MODEL.MASK_CROP.OWN_TOWER = False
# MaskCrop names masks with its own copy of CLIP's text transformer (the token embedding table
# stays shared and frozen), trained with it by TRAIN on the seen class names.
_C.MODEL.MASK_CROP.OWN_TEXT_TOWER = False
_C.MODEL.MASK_CROP.TRAIN = False
# Crop augmentation while TRAIN: each mask's box is CONTEXT times (1 + j)^u, u uniform in
# [-1, 1] (j = TRAIN_CONTEXT_JITTER; 0 = off), and TRAIN_FLIP mirrors half the crops left-right.
_C.MODEL.MASK_CROP.TRAIN_CONTEXT_JITTER = 0.0
_C.MODEL.MASK_CROP.TRAIN_FLIP = False
# In training (TRAIN, or a MaskCrop main classifier): turn each crop by an angle drawn uniformly
# from 0 and ROTATIONS (the test-time views; an empty ROTATIONS fails at the first step).
_C.MODEL.MASK_CROP.TRAIN_ROTATE = False
# The frame of the masks TRAIN learns from: "features" (the mask features' 1/4 resolution, as the
# Mask-Adapter) or "image" (ground-truth masks at the image's resolution, predicted masks resized
# to it), so that crops show an object's own outline. "image" costs B x masks x H x W memory.
_C.MODEL.MASK_CROP.TRAIN_MASK_SIZE = "features"
# Side of the crops (0 = MODEL.CLIP.IMAGE_SIZE). Larger crops show small objects in more detail;
# only for towers that take any input size (ConvNeXt; a ViT keeps its training size).
_C.MODEL.MASK_CROP.CROP_SIZE = 0
# While TRAIN: every step also trains the crop towers contrastively on BATCH_SIZE image-caption
# pairs drawn at random from DATASET (CLIP's pretraining corpus, e.g. "shapes_ov_captions",
# whose pairs name every class; "" = off), the loss weighted by WEIGHT. The crops then keep
# learning the names that no mask annotation carries instead of only the seen classes'.
_C.MODEL.MASK_CROP.CAPTIONS = CN()
_C.MODEL.MASK_CROP.CAPTIONS.DATASET = ""
_C.MODEL.MASK_CROP.CAPTIONS.BATCH_SIZE = 32
_C.MODEL.MASK_CROP.CAPTIONS.WEIGHT = 0.3

# ---- Inference ------------------------------------------------------------------------------
_C.MODEL.TEST = CN()
# Masks with a best non-void score under this are dropped (panoptic/instance).
_C.MODEL.TEST.OBJECT_MASK_THRESHOLD = 0.5
_C.MODEL.TEST.OVERLAP_THRESHOLD = 0.8
_C.MODEL.TEST.DETECTIONS_PER_IMAGE = 100
# Classify only the top-N proposals by objectness (0 = all): the cost saver at 250 queries.
_C.MODEL.TEST.MAX_MASKS_CLASSIFIED = 0
# Up to this many extra proposals for what the generator's masks leave uncovered (connected
# regions of 1 - max(objectness x mask) > 0.5 covering at least LEFTOVER_MIN_AREA of the image),
# named by the classifier: a generator can learn to skip classes whose pixels training ignored.
_C.MODEL.TEST.LEFTOVER_REGIONS = 0
_C.MODEL.TEST.LEFTOVER_MIN_AREA = 0.01
# Cut each leftover region where the names of its tiles change: the frame is tiled GRID x GRID
# (0 = off, else >= 2), every tile the region fills to MIN_FILL is named by the classifier, and the region
# is split between the PARTS names most tiles carry, each by at least MIN_SHARE of them (two
# unlabelled kinds of stuff side by side form one connected region, which one name would cover).
# Up to LEFTOVER_REGIONS x PARTS masks. Only what the generator's own masks leave, unless
# EXTERNAL_MASKS (also what given masks, e.g. SAM's, leave: large regions holding unfound objects,
# whose tiles then cut thing-named fragments).
_C.MODEL.TEST.LEFTOVER_SPLIT = CN()
_C.MODEL.TEST.LEFTOVER_SPLIT.GRID = 0
_C.MODEL.TEST.LEFTOVER_SPLIT.PARTS = 2
_C.MODEL.TEST.LEFTOVER_SPLIT.MIN_FILL = 0.5
_C.MODEL.TEST.LEFTOVER_SPLIT.MIN_SHARE = 0.25
_C.MODEL.TEST.LEFTOVER_SPLIT.EXTERNAL_MASKS = False
# Cut each of the generator's masks where a narrow neck joins two blobs (two touching objects that
# one mask covers), before naming: cores are the pixels at least DEPTH times as far from the outline
# as the deepest of their blob (each at least MIN_CORE of the frame), and every pixel joins the
# nearest core (:func:`mmmask.modeling.postprocess.neck_parts`). The parts are named by the
# classifier; the mask is replaced by them only where they take different names, all of things
# (parts of one name are joined again), so a single object pinched by an occluder stays whole,
# and stuff, whose regions spread over blobs, is never cut. Parts keep the
# mask's objectness; the generator's own class distribution does not carry over to them.
_C.MODEL.TEST.NECK_SPLIT = CN()
_C.MODEL.TEST.NECK_SPLIT.ENABLED = False
_C.MODEL.TEST.NECK_SPLIT.DEPTH = 0.5
_C.MODEL.TEST.NECK_SPLIT.MIN_CORE = 0.002
# Refine the generator's masks before they are named: upsampled to the image's resolution (the
# longer side capped at MAX_SIDE, 0 = no cap) and guided-filtered with the image, so outlines
# follow colour edges. RADIUS is in mask cells (4 image pixels for a stride-4 generator), EPS on
# 0-1 colours (larger: smoother across weak edges); SUBSAMPLE s > 1 fits the filter on images
# shrunk s times (fast guided filter: s^2 times cheaper). External masks (SAM) are left as they are.
# MODEL.MASK_CROP.TRAIN with TRAIN_MASK_SIZE "image" then trains on refined predicted masks too.
_C.MODEL.TEST.MASK_REFINE = CN()
_C.MODEL.TEST.MASK_REFINE.ENABLED = False
_C.MODEL.TEST.MASK_REFINE.RADIUS = 1.5
_C.MODEL.TEST.MASK_REFINE.EPS = 1e-3
_C.MODEL.TEST.MASK_REFINE.MAX_SIDE = 512
_C.MODEL.TEST.MASK_REFINE.SUBSAMPLE = 1
# FC-CLIP-style in-/out-of-vocabulary geometric ensemble of the generator's classes and CLIP's.
_C.MODEL.ENSEMBLE = CN()
_C.MODEL.ENSEMBLE.ENABLED = False
# Weight of CLIP's score for classes seen in training (ALPHA) and unseen (BETA).
_C.MODEL.ENSEMBLE.ALPHA = 0.4
_C.MODEL.ENSEMBLE.BETA = 0.8
# The tasks whose masks are named with the ensemble (the others use the classifier alone).
_C.MODEL.ENSEMBLE.TASKS = ("semantic", "panoptic", "instance")
# Self-training on the unlabelled pixels of the training images (transductive: the names of the
# classes that training never labels are known, their pixels are not). Each training step names
# the model's own masks with the dataset's whole vocabulary; a mask named with a class unseen in
# training, scored (class probability x objectness) >= THRESHOLD, covering >= MIN_AREA of the
# image and lying for >= MIN_IGNORED of its pixels on ignore-labelled ones, joins the targets
# with that class (its pixels on labelled ground truth removed). The classifiers then train on
# the whole vocabulary, unseen names included.
_C.MODEL.SELF_TRAIN = CN()
_C.MODEL.SELF_TRAIN.ENABLED = False
_C.MODEL.SELF_TRAIN.THRESHOLD = 0.3
_C.MODEL.SELF_TRAIN.MIN_IGNORED = 0.8
_C.MODEL.SELF_TRAIN.MIN_AREA = 0.002

# --------------------------------------------------------------------------------------------
# Causal-masked generation (CM3)
# --------------------------------------------------------------------------------------------
_C.CM3 = CN()
_C.CM3.N_LAYER = 4
_C.CM3.N_HEAD = 4
_C.CM3.N_EMBD = 256
# Longest token sequence (positions): a masked document is caption + markup + image tokens + 2
# tokens per span + <eos>; longer captions are cut at a word boundary to fit.
_C.CM3.BLOCK_SIZE = 256
_C.CM3.DROPOUT = 0.0
# CM3 span masking: number of spans ~ Poisson(POISSON_LAMBDA) clamped to [0, MAX_SPANS];
# 0 spans for every document = plain causal language modelling (the baseline).
_C.CM3.POISSON_LAMBDA = 1.0
_C.CM3.MAX_SPANS = 3
_C.CM3.CAUSAL_ONLY = False
_C.CM3.VQ = CN()
_C.CM3.VQ.IMAGE_SIZE = 64
# Encoder stride (power of 2): IMAGE_SIZE / DOWNSAMPLE image tokens per side (64 / 8 = 8x8).
_C.CM3.VQ.DOWNSAMPLE = 8
_C.CM3.VQ.CODEBOOK_SIZE = 256
_C.CM3.VQ.CODEBOOK_DIM = 32
# Width of the first encoder stage (doubled after the first downsampling).
_C.CM3.VQ.HIDDEN_DIM = 64
# Weight of the commitment loss (encoder output pulled towards its code).
_C.CM3.VQ.COMMITMENT_WEIGHT = 0.25
# EMA decay of the codebook updates.
_C.CM3.VQ.EMA_DECAY = 0.9
# Initialise the codebook with k-means on the first training batch.
_C.CM3.VQ.KMEANS_INIT = True
# Codes whose EMA usage falls below this are re-seeded from batch features (0 = never).
_C.CM3.VQ.DEAD_CODE_THRESHOLD = 1.0
# Reconstruction loss in [-1, 1] pixel space: "l1" or "mse".
_C.CM3.VQ.RECON_LOSS = "l1"
# Weight of an L1 loss on image gradients (sharper shape edges); 0 = off.
_C.CM3.VQ.EDGE_LOSS_WEIGHT = 0.1
# Shipped/ local VQ weights used by CM3 training and generation.
_C.CM3.VQ.WEIGHTS = ""
# Number of <mask:i> sentinel tokens in the vocabulary (>= MAX_SPANS; infilling may use more).
_C.CM3.NUM_SENTINELS = 8
# Probability that a training document's single span is exactly its caption (teaches captioning
# as alt-text infilling); the other documents get uniform random spans. Ignored with CAUSAL_ONLY.
_C.CM3.CAPTION_SPAN_PROB = 0.25
# Probability that a training caption is replaced by "" (unconditional image documents, needed by
# classifier-free guidance).
_C.CM3.CAPTION_DROP_PROB = 0.1
# Kinds of Shapes-OV training documents, cycled over record indices: "scene" (a whole scene and its
# caption), "crop" (one large object on one stuff class) and "region" (a square around one object
# of a scene, captioned with that object alone): object-centric documents show shapes large.
_C.CM3.DOCUMENT_KINDS = ("scene",)
# Generation defaults of the CM3 generator (api/CLI/demo).
_C.CM3.GENERATE = CN()
# Classifier-free guidance scale for text-to-image and image infilling (1 = no guidance).
_C.CM3.GENERATE.CFG_SCALE = 3.0
# Sampling temperature for images (0 = greedy) and top-k (0 = off).
_C.CM3.GENERATE.TEMPERATURE = 1.0
_C.CM3.GENERATE.TOP_K = 64
# Longest generated caption / text infill in bytes.
_C.CM3.GENERATE.MAX_TEXT_TOKENS = 120

# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
_C.DATASETS = CN()
# Names registered in DatasetCatalog (e.g. "shapes_ov_train", "shapes_ov_test").
_C.DATASETS.TRAIN = ("shapes_ov_train",)
_C.DATASETS.TEST = ("shapes_ov_val",)
# Dataset folders (user layout or COCO; relative to $MMMASK_DATASETS when not found as given)
# registered at start-up as <folder>_<split>[_panoptic|_instances].
_C.DATASETS.ROOTS = ()
# Size of the Shapes-OV splits (images) and the image side in pixels.
_C.DATASETS.SHAPES = CN()
_C.DATASETS.SHAPES.TRAIN_SIZE = 20000
_C.DATASETS.SHAPES.VAL_SIZE = 200
_C.DATASETS.SHAPES.TEST_SIZE = 500
_C.DATASETS.SHAPES.IMAGE_SIZE = 128
_C.DATASETS.SHAPES.SEED = 0
# Image kinds of the shapes_ov_captions split, cycled over record indices: "crop" (one large object
# on one stuff class), "scene" (a whole scene and its caption) and "region" (a square around one
# object of a scene, neighbours and occluders included, captioned with that object alone).
_C.DATASETS.SHAPES.CAPTION_KINDS = ("crop", "scene")

_C.INPUT = CN()
# Name in DATA_MAPPER_REGISTRY turning a catalog record into the model's input dict.
_C.INPUT.DATASET_MAPPER = "SegmentationMapper"
# Training crop / resize target (square) and large-scale-jitter scale range.
_C.INPUT.IMAGE_SIZE = 128
_C.INPUT.MIN_SCALE = 0.5
_C.INPUT.MAX_SCALE = 1.5
_C.INPUT.RANDOM_FLIP = True
# Training resize: "lsj" (large-scale jitter: fit IMAGE_SIZE * U[MIN_SCALE, MAX_SCALE], then
# crop/pad to IMAGE_SIZE) or "shortest_edge" (shorter side to a random size in that range, then
# crop/pad to IMAGE_SIZE).
_C.INPUT.TRAIN_AUGMENTATION = "lsj"
# Test-time: the shorter side is resized to this (0 = keep the image size).
_C.INPUT.TEST_SIZE = 0
# Largest image side accepted at inference; bigger images are downscaled, never rejected.
_C.INPUT.MAX_SIDE = 4096
# Images with more pixels than this are refused before decoding (decompression bombs).
_C.INPUT.MAX_PIXELS = 100_000_000

_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 0

# --------------------------------------------------------------------------------------------
# Solver / training
# --------------------------------------------------------------------------------------------
_C.SOLVER = CN()
_C.SOLVER.OPTIMIZER = "ADAMW"
_C.SOLVER.BASE_LR = 1e-4
_C.SOLVER.WEIGHT_DECAY = 0.05
_C.SOLVER.BETAS = (0.9, 0.999)
# Global batch size (split over processes).
_C.SOLVER.IMS_PER_BATCH = 16
_C.SOLVER.MAX_ITER = 1000
# "cosine", "poly" or "constant", after a linear warm-up.
_C.SOLVER.LR_SCHEDULER = "cosine"
_C.SOLVER.WARMUP_ITERS = 50
_C.SOLVER.CLIP_GRADIENTS = 1.0
# Mixed precision (bf16 on CPU, fp16 with a scaler on CUDA).
_C.SOLVER.AMP = False
_C.SOLVER.CHECKPOINT_PERIOD = 500
# Keep this many periodic checkpoints (older ones are deleted).
_C.SOLVER.KEEP_LAST = 2
# Engine: SGD momentum (SOLVER.OPTIMIZER "SGD"; the other choice is "ADAMW").
_C.SOLVER.MOMENTUM = 0.9
# Engine: the warm-up ramps the learning rate linearly from BASE_LR * WARMUP_FACTOR to BASE_LR.
_C.SOLVER.WARMUP_FACTOR = 0.001
# Engine: exponent of the "poly" schedule, lr = BASE_LR * (1 - progress) ** POLY_POWER.
_C.SOLVER.POLY_POWER = 0.9
# Engine: DistributedDataParallel(find_unused_parameters=...); True when some parameters get no
# gradient in a step (e.g. a branch switched off during warm-up).
_C.SOLVER.FIND_UNUSED_PARAMETERS = False
# With more than one process: shard parameters, gradients and optimizer state with FSDP2
# (torch.distributed.fsdp.fully_shard; units = the model's fsdp_units(), e.g. the CM3 decoder's
# blocks) instead of replicating them with DDP. Checkpoints stay single full-state files.
_C.SOLVER.FSDP = False

_C.TEST = CN()
# Run evaluation every EVAL_PERIOD iterations (0 = only at the end).
_C.TEST.EVAL_PERIOD = 0
# Task evaluated by default: "semantic", "panoptic" or "instance".
_C.TEST.TASK = "semantic"
# mIoU averaged over classes present in the ground truth (True) or over all classes (False).
_C.TEST.MIOU_PRESENT_ONLY = True

# Log every N iterations (console, metrics.jsonl, TensorBoard).
_C.LOG_PERIOD = 20
_C.OUTPUT_DIR = "./output"
# Seed for python, numpy and torch (per rank: SEED + rank). -1 = random.
_C.SEED = 0
# Deterministic algorithms; with it on, a resumed run repeats the uninterrupted one exactly.
_C.DETERMINISTIC = False
# Threads for intra-op parallelism on the CPU (0 = torch's default).
_C.NUM_THREADS = 0
