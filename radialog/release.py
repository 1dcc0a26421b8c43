"""What RaDialog v1's public release consists of: file names, the checkpoints its README names, and the
BioViL-T version its code pins. One place, read by `download`, `convert` and the image encoder."""

from __future__ import annotations

STAGE1_FILE = "checkpoint_4.pth"  # stage-1 Q-Former (LAVIS format), weights under ["model"]
BIOVIL_FILE = "biovil_t_image_model_proj_size_128.pt"  # hi-ml-multimodal ImageModel state dict
# The Hugging Face tag and MD5 that RaDialog's and hi-ml-multimodal's own download code pin.
BIOVIL_REPO, BIOVIL_REVISION = "microsoft/BiomedVLP-BioViL-T", "v1.0"
BIOVIL_MD5 = "a83080e2f23aa584a4f2b24c39b1bb64"
CLASSIFIER_DIR = "chexpert_train"
CLASSIFIER_FILE = "ChexpertClassifier-epoch=06-val_f1=0.36.ckpt"  # the checkpoint RaDialog's demo loads
# The Trainer checkpoints RaDialog's README says it used for each adapter.
ADAPTER_CHECKPOINTS = {"report": "checkpoint-11200", "instruct": "checkpoint-4800"}
VARIANTS = tuple(ADAPTER_CHECKPOINTS)
# Seeds before RaDialog built its frozen projector: 42 in stage 1 and in the run that computed the image
# embeddings its LLM stage was trained on (the default), 16 in its demo.py.
PROJECTOR_SEEDS = (42, 16)
