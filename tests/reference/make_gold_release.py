"""Write tests/data/gold_release/: a tiny RaDialog release made, saved and run by RaDialog's own code.

RaDialog's public code (ChantalMP/RaDialog) builds the stage-1 `Blip2Qformer` (with hi-ml's BioViL-T image
model and the new 1408-d projector), saves it through LAVIS's runner, adds `img_proj_layer` to its patched
Llama, trains LoRA with peft 0.3.0 and saves the adapter through its `ImgTrainer`, and trains the CheXpert
classifier with Lightning. This script does the same at tiny sizes (Q-Former hidden 32, a 2-layer Llama
of width 64 with a 512-piece sentencepiece vocabulary made here) with random weights, then computes what
RaDialog's own inference code gives on real X-rays: the image embeddings the LLM reads (Q-Former output
through `img_proj_layer`), the classifier's probabilities, the LLM's logits for the report prompt (its
embedding splice at the 32 `<IMG>` positions) and greedy token ids. tests/test_gold_parity.py checks
that this project's converter and model reproduce them.

It runs in a throwaway virtual environment with RaDialog's pins where they install on Python 3.11
(`REFERENCE_REQUIREMENTS`); torch is not installed there but linked in from the project's environment
(RaDialog pins torch 1.13.0, whose wheels are huge and have no Python 3.11 build that matches here).
Nothing is fetched from a model hub: every download RaDialog's code makes is replaced, in this process
only, by a local stand-in (`patch_radialog`). What is too large for the fixture (the BioViL-T file and
the classifier's ResNet-50) is rebuilt from seeds (tests/reference/radialog_gold_env.py).

Run from the repository root with the project's environment:

    .venv/bin/python tests/reference/make_gold_release.py --radialog /tmp/radialog_src [--venv /tmp/radialog_gold_venv]

where /tmp/radialog_src is a checkout of RaDialog's public code, e.g.
`git -C <bare clone> archive HEAD | tar -x -C /tmp/radialog_src`.
"""

from __future__ import annotations

import argparse
import ast
import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
FIXTURE = REPO_ROOT / "tests" / "data" / "gold_release"
PROJECT_SITE = (
    REPO_ROOT / ".venv" / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
)
# Two NIH ChestX-ray14 radiographs from ../shared/data/cxr (the checkout's neighbour; tests/conftest.py).
SHARED_CXR = REPO_ROOT.parent / "shared" / "data" / "cxr"
IMAGES = (str(SHARED_CXR / "00000001_000.png"), str(SHARED_CXR / "00027426_000.png"))

# RaDialog's requirements.txt, as far as they install on Python 3.11 (departures commented).
REFERENCE_REQUIREMENTS = [
    "transformers==4.28.1",  # RaDialog's environment (its README); tokenizers 0.13.3 comes with it
    "peft==0.3.0",  # pinned to a git commit of 0.3.0.dev there (not reachable here): the 0.3.0 release
    "accelerate==0.18.0",
    "sentencepiece==0.2.0",  # 0.1.98 has no Python 3.11 wheel (README: Python 3.7)
    "omegaconf==2.3.0",
    "iopath==0.1.10",
    "timm==0.4.12",
    # pytorch_lightning==1.6.5 goes in without dependencies (NO_DEPS): pip reads its invalid `torch>=1.8.*`
    # with legacy rules that the linked torch fails; these are its dependencies.
    "torchmetrics",
    "pyDeprecate",
    "tensorboard",
    "PyYAML",
    "tqdm",
    "packaging",
    "protobuf<=3.20.1",
    "fsspec[http]",
    "wandb==0.14.0",  # imported at module level by the classifier's training script
    "nltk==3.8.1",
    "pycocoevalcap==1.2",  # imported by LAVIS's report dataset module
    "numpy==1.26.4",  # 1.21.6 has no Python 3.11 wheel
    "pandas==1.5.3",  # 1.3.5: no Python 3.11 wheel
    "scikit-image==0.21.0",  # 0.18.1: no Python 3.11 wheel
    "scikit-learn==1.3.2",
    "torchinfo==1.8.0",
    "fire==0.5.0",
    "pillow",
    "safetensors",  # the fixture's reference tensors
    "sympy",
    "networkx",
    "filelock",
    "jinja2",
    "typing_extensions",
]
# accelerate 0.18 imports pkg_resources, which newer setuptools dropped; installed on its own afterwards,
# since torch 2.14's metadata asks for setuptools>=77 (pip then warns, and torch never imports it).
OLD_SETUPTOOLS = "setuptools<70"
# Not installed with their dependencies (hi-ml-multimodal's would pull another transformers). The README
# says hi-ml-multimodal 0.2.0; 0.2.2 is the project's, and RaDialog uses it only for `get_module_device`
# (its BioViL-T model is its own biovil_t/ copy); the seeded BioViL-T stand-in is built with it on both sides.
NO_DEPS = ["pytorch_lightning==1.6.5", "hi-ml-multimodal==0.2.2", "pydicom", "SimpleITK"]
# Linked from the project's environment instead of installed (the same build on both sides).
LINKED = ["torch", "torchgen", "torchvision", "torchvision.libs", "triton", "nvidia"]

LLM_DIR = "vicuna-7b-v1.3"
ADAPTER_DIR = "vicuna-7b-img-report/checkpoint-11200"
CLASSIFIER_DIR = "chexpert_train"
CLASSIFIER_FILES = {"best": "ChexpertClassifier-epoch=06-val_f1=0.36.ckpt", "last": "last.ckpt"}
CHEXPERT_LABELS = [
    "No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
    "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
    "Fracture", "Support Devices",
]  # fmt: skip
STAGE1_SEED = 42  # pretraining/configs/blip2_pretrain_stage1.yaml, rank 0
TINY_BERT = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, vocab_size=64
)  # fmt: skip
TINY_LLAMA = dict(
    hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512,
    rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0,
)  # fmt: skip
LLM_VOCAB = 512
NEW_TOKENS = 8
REPORT_PROMPT = "img_matching_examples_ig2_noexamples_IMG_findings"
RADIALOG_IMG_ID = 32000  # hard-coded in RaDialog's LlamaModel.split_at_img


# ---------------------------------------------------------------------------------------- outside: the venv
def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if python.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    shim = venv / "torch_shim"
    shim.mkdir()
    for entry in sorted(PROJECT_SITE.iterdir()):
        base = entry.name.split("-")[0]
        if entry.name in LINKED or (entry.name.endswith(".dist-info") and base.replace("_", "-") in _linked_dists()):
            (shim / entry.name).symlink_to(entry)
    site = next((venv / "lib").glob("python*/site-packages"))
    (site / "zz_torch_shim.pth").write_text(f"{shim}\n")
    # Pin the linked builds exactly, so that nothing asks pip for another torch (this replaces the machine's
    # pip constraints, whose `torch<=2.14.1` a local version such as 2.14.1+cu130 does not satisfy).
    import importlib.metadata as md

    constraints = venv / "constraints.txt"
    constraints.write_text("".join(f"{name}=={md.version(name)}\n" for name in ("torch", "torchvision", "triton")))
    env = {**os.environ, "PIP_CONSTRAINT": str(constraints)}
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, *REFERENCE_REQUIREMENTS], check=True, env=env)
    subprocess.run([*pip, "--no-deps", *NO_DEPS], check=True, env=env)
    subprocess.run([*pip, OLD_SETUPTOOLS], check=True, env=env)
    where = subprocess.run(
        [str(python), "-c", "import torch; print(torch.__file__)"], check=True, capture_output=True, text=True
    ).stdout
    if not where.startswith(str(shim)):
        raise SystemExit(f"{venv} imports torch from {where.strip()}, not the project's build in {shim}")
    return python


def _linked_dists() -> set[str]:
    names = {"torch", "torchvision", "triton"}
    names |= {p.name.split("-")[0].replace("_", "-") for p in PROJECT_SITE.glob("nvidia_*.dist-info")}
    return names


# ---------------------------------------------------------------------------------------- inside: RaDialog
def patch_radialog(src: Path, work: Path, biovil_file: Path) -> None:
    """Make RaDialog's code run offline with tiny stand-ins; every patch lives in this process only."""
    import torch
    import torchvision.models.resnet as tv_resnet
    import transformers

    sys.path[:0] = [str(src), str(src / "findings_classifier")]
    # biovil_t/resnet.py imports torchvision's `model_urls`, gone since torchvision 0.15 (RaDialog: 0.14).
    tv_resnet.model_urls = getattr(tv_resnet, "model_urls", {"resnet18": "", "resnet50": ""})

    import biovil_t.encoder
    import biovil_t.pretrained

    # RaDialog's copy builds its ResNet-50 with ImageNet weights that BioViL-T's file then overwrites; the
    # download (which draws no random numbers) becomes a no-op: the random initialisation stays.
    real_resnet50 = biovil_t.encoder.resnet50
    biovil_t.encoder.resnet50 = lambda pretrained=False, **kw: real_resnet50(pretrained=False, **kw)
    biovil_t.pretrained._download_biovil_t_image_model_weights = lambda: biovil_file

    import model.lavis.models.blip2_models.blip2 as blip2
    from model.lavis.models.blip2_models.Qformer import BertConfig, BertLMHeadModel

    blip2._download_biovil_t_image_model_weights = lambda: biovil_file
    # finetune.py imports `datasets` (only its training data loading uses it): not installed here.
    if importlib.util.find_spec("datasets") is None:
        stub = types.ModuleType("datasets")
        stub.__spec__ = importlib.machinery.ModuleSpec("datasets", None)
        stub.load_dataset = None
        sys.modules["datasets"] = stub
    bert_dir = work / "bert-base-uncased"
    bert_dir.mkdir(exist_ok=True)
    import radialog_gold_env as gold

    (bert_dir / "vocab.txt").write_text("\n".join(gold.tiny_bert_vocab(TINY_BERT["vocab_size"])) + "\n")

    real_tokenizer = transformers.BertTokenizer.from_pretrained.__func__
    real_config = BertConfig.from_pretrained.__func__

    def tokenizer_from_pretrained(cls, name, *args, **kwargs):
        return real_tokenizer(cls, str(bert_dir) if name == "bert-base-uncased" else name, *args, **kwargs)

    def config_from_pretrained(cls, name, *args, **kwargs):
        if name == "bert-base-uncased":  # bert-base's config at tiny sizes
            return cls(**TINY_BERT, layer_norm_eps=1e-12, max_position_embeddings=512)
        return real_config(cls, name, *args, **kwargs)

    def model_from_pretrained(cls, name, *args, config=None, **kwargs):
        assert name == "bert-base-uncased"
        return cls(config)  # random weights in place of bert-base-uncased's

    blip2.BertTokenizer.from_pretrained = classmethod(tokenizer_from_pretrained)
    BertConfig.from_pretrained = classmethod(config_from_pretrained)
    BertLMHeadModel.from_pretrained = classmethod(model_from_pretrained)
    torch.set_grad_enabled(True)


def setup_seeds(seed: int) -> None:
    """LAVIS's `setup_seeds` (train.py) at rank 0."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def perturb_trainable(module, seed: int, scale: float = 0.02) -> None:
    """Stand-in for training: move every trainable parameter (LayerNorms included) off its initialisation."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(module.named_parameters()):
            if param.requires_grad:
                param.add_(scale * torch.randn(param.shape, generator=generator))


def build_stage1(release: Path):
    """RaDialog's stage-1 Blip2Qformer (vit "biovil"), saved by LAVIS's `RunnerBase._save_checkpoint`."""
    import torch
    from model.lavis.models.blip2_models.blip2_qformer import Blip2Qformer
    from model.lavis.runners.runner_base import RunnerBase

    setup_seeds(STAGE1_SEED)
    blip = Blip2Qformer(
        vit_model="biovil", img_size=448, freeze_vit=True, num_query_token=32, cross_attention_freq=2, max_txt_len=300
    )
    perturb_trainable(blip, seed=4)

    class Runner:  # what _save_checkpoint reads from the runner
        model = blip
        optimizer = torch.optim.AdamW([p for p in blip.parameters() if p.requires_grad], lr=1e-4)
        scaler = None
        output_dir = str(release)

        class config:
            @staticmethod
            def to_dict():
                return {"run": {"seed": STAGE1_SEED, "max_epoch": 5}, "model": {"vit_model": "biovil"}}

        @staticmethod
        def unwrap_dist_model(model):
            return model

    RunnerBase._save_checkpoint(Runner, 4)
    return blip


def train_tokenizer(directory: Path) -> None:
    """A 512-piece LLaMA-style sentencepiece BPE model (byte fallback, identity normalisation)."""
    import sentencepiece as spm

    corpus = [
        "A chat between a curious user and an artificial intelligence assistant acting as an experienced "
        "radiologist. The assistant gives professional, detailed, and polite answers to the user's questions.",
        "Image information: . Predicted Findings: no common findings. You are to act as a radiologist and write "
        "the finding section of a chest x-ray radiology report for this X-ray image and the given predicted "
        "findings. Write in the style of a radiologist, write one fluent text without enumeration, be concise "
        "and don't provide explanations or reasons.",
        "The heart size is normal. The lungs are clear. There is no pleural effusion or pneumothorax.",
        "Cardiomegaly, edema, consolidation, pneumonia, atelectasis, lung opacity, lung lesion, fracture, "
        "support devices, enlarged cardiomediastinum, pleural other, no finding.",
        "USER: ASSISTANT: Is there any pleural effusion? List all the findings in this report.",
    ] * 20
    directory.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_prefix=str(directory / "tokenizer"),
        model_type="bpe",
        vocab_size=LLM_VOCAB,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        split_digits=True,
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    (directory / "tokenizer.vocab").unlink()


def build_language_model(release: Path, qformer_hidden: int):
    """The base LLM (RaDialog's patched Llama, tiny), then stage 2 as finetune.py sets it up and saves it."""
    import torch
    from model.lavis.models.blip2_models.modeling_llama_imgemb import LlamaForCausalLM
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    from torch import nn
    from transformers import LlamaConfig, LlamaTokenizer

    llm_dir = release / LLM_DIR
    train_tokenizer(llm_dir)
    tokenizer = LlamaTokenizer(str(llm_dir / "tokenizer.model"))
    tokenizer.save_pretrained(str(llm_dir))
    torch.manual_seed(7)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=LLM_VOCAB, **TINY_LLAMA))
    base.save_pretrained(str(llm_dir))  # pytorch_model.bin, as Vicuna v1.3's files are

    # finetune.py: img_proj_layer on the LlamaModel (768 there: the Q-Former's width), <IMG> added, the
    # embeddings resized, LoRA on q/v, img_proj_layer unfrozen.
    model = LlamaForCausalLM.from_pretrained(str(llm_dir))
    model.base_model.img_proj_layer = nn.Linear(qformer_hidden, model.base_model.config.hidden_size)
    tokenizer = LlamaTokenizer.from_pretrained(str(llm_dir), use_fast=False)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<IMG>"]})
    model.resize_token_embeddings(len(tokenizer))
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], lora_dropout=0.05, bias="none", task_type="CAUSAL_LM"
    )
    model = get_peft_model(model, config)
    model.model.base_model.img_proj_layer.weight.requires_grad = True
    model.model.base_model.img_proj_layer.bias.requires_grad = True
    generator = torch.Generator().manual_seed(11)
    with torch.no_grad():  # stand-in for training: LoRA B leaves zero, the projection moves
        for name, param in sorted(model.named_parameters()):
            if "lora_B" in name:
                param.copy_(0.05 * torch.randn(param.shape, generator=generator))
            elif "img_proj_layer" in name:
                param.add_(0.05 * torch.randn(param.shape, generator=generator))
    old_state_dict = model.state_dict
    model.state_dict = (lambda self, *_, **__: get_peft_model_state_dict(self, old_state_dict())).__get__(
        model, type(model)
    )

    # The Trainer's checkpoint folder, written by finetune.py's ImgTrainer._save (no tokenizer, as there).
    import finetune
    from transformers import TrainingArguments

    adapter_dir = release / ADAPTER_DIR
    trainer = type("Trainer", (), {})()
    trainer.model, trainer.tokenizer = model, None
    trainer.args = TrainingArguments(output_dir=str(adapter_dir.parent), report_to=[])
    finetune.ImgTrainer._save(trainer, str(adapter_dir))
    (adapter_dir / "training_args.bin").unlink()  # a pickled TrainingArguments: not needed, not a tensor
    # The release's adapter_config.json (peft writes it with inference_mode on, as finetune.save_pretrained).
    model.peft_config["default"].inference_mode = True
    model.peft_config["default"].base_model_name_or_path = "lmsys/vicuna-7b-v1.3"  # what finetune.py loaded
    model.peft_config["default"].save_pretrained(str(adapter_dir))


def build_classifier(release: Path, biovil: dict) -> dict:
    """RaDialog's LitIGClassifier, with weights from radialog_gold_env, saved by Lightning as the release
    has it: the best epoch's file by name and last.ckpt beside it."""
    import pytorch_lightning as pl
    import radialog_gold_env as gold
    import torch
    from chexpert_train import LitIGClassifier

    folder = release / CLASSIFIER_DIR
    folder.mkdir()
    skeletons = {}
    for which, name in CLASSIFIER_FILES.items():
        weights = torch.rand(14, generator=torch.Generator().manual_seed(gold.CLASSIFIER_SEEDS[which])) * 10
        lit = LitIGClassifier(num_classes=14, class_names=CHEXPERT_LABELS, class_weights=weights)
        state = gold.classifier_state(biovil, which)
        missing, unexpected = lit.load_state_dict(state, strict=False)
        assert missing == ["criterion.pos_weight"] and not unexpected, (missing, unexpected)
        trainer = pl.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, max_epochs=1)
        trainer.strategy.connect(lit)
        trainer.save_checkpoint(str(folder / name))
        checkpoint = torch.load(folder / name, map_location="cpu", weights_only=False)
        checkpoint["epoch"] = 6 if which == "best" else 9
        torch.save(checkpoint, folder / name)
        skeleton = dict(checkpoint)
        skeleton["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k not in state}
        skeletons[which] = {"skeleton": skeleton, "statistics": gold.state_statistics(checkpoint["state_dict"])}
    return skeletons


# ---------------------------------------------------------------------------------------- inside: references
def _function_from(path: Path, name: str):
    """One function of a RaDialog script that cannot be imported (test.py and demo.py run on import)."""
    tree = ast.parse(path.read_text())
    node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)
    namespace: dict = {}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), namespace)
    return namespace[name]


def radialog_prompt(src: Path, positive: list[str]) -> tuple[str, str]:
    """(findings text, prompt) for the report request, as test.py builds them: its findings string from the
    predicted labels (`create_structured_chexpert_findings`), the report processor with the prompt the
    README evaluates with (vicuna_prompts.json), and test.py's Vicuna v1.3 conversation."""
    from types import SimpleNamespace

    from model.lavis.data.ReportDataset import Conversation, MyReportProcessor, SeparatorStyle

    structured = _function_from(src / "test.py", "create_structured_chexpert_findings")
    holder = SimpleNamespace(pred_chexpert_labels={"img0": list(positive)})
    no_labels, finding_string = structured(holder, {"dicom_id": "img0"})
    # README's evaluation: test.py --prompt img_matching_examples_ig2_noexamples_IMG_findings
    template = json.loads((src / "vicuna_prompts.json").read_text())[REPORT_PROMPT]
    text = MyReportProcessor(prompt=template)(finding_string, no_labels=no_labels)
    test = ast.parse((src / "test.py").read_text())
    call = next(
        node
        for node in ast.walk(test)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Conversation"
    )
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg != "sep_style"}
    conv = Conversation(**kwargs, sep_style=SeparatorStyle.TWO)
    conv.append_message(conv.roles[0], text)
    conv.append_message(conv.roles[1], None)
    return ("no common findings" if no_labels else finding_string), conv.get_prompt()


def load_image(path: str):
    """RaDialog's loading: skimage imread, min-max to uint8, grayscale (MIMIC_CXR_Dataset.load_image)."""
    from types import SimpleNamespace

    from model.lavis.data.ReportDataset import MIMIC_CXR_Dataset

    holder = SimpleNamespace(
        remap_to_uint8=lambda array, percentiles=None: MIMIC_CXR_Dataset.remap_to_uint8(None, array)
    )
    return MIMIC_CXR_Dataset.load_image(holder, Path(path))


EMBEDDINGS_FILE = "pretraining/embs/stage1_pt_instruct_blip_origlr_img448_embeddings_test.pkl"


def write_embeddings(embeddings: dict) -> None:
    """RaDialog's LlamaModel reads the Q-Former embeddings (dicom → (32, 768) array) from this pickle, which
    its stage-1 embedding run wrote; relative to the working directory."""
    import pickle

    Path(EMBEDDINGS_FILE).parent.mkdir(parents=True, exist_ok=True)
    Path(EMBEDDINGS_FILE).write_bytes(pickle.dumps(embeddings))


def compute_references(src: Path, release: Path, images: list[str], work: Path) -> dict:
    import numpy as np
    import torch
    from chexpert_train import LitIGClassifier
    from model.lavis.data.ReportDataset import ExpandChannels, create_chest_xray_transform_for_inference
    from model.lavis.models.blip2_models.blip2_qformer import Blip2Qformer
    from model.lavis.models.blip2_models.modeling_llama_imgemb import LlamaForCausalLM, LlamaModel
    from peft import PeftModelForCausalLM
    from torch import nn
    from torchvision.transforms import CenterCrop, Compose, Resize, ToTensor
    from transformers import LlamaTokenizer

    torch.set_grad_enabled(False)
    pil = [load_image(p) for p in images]

    # Image side as blip2_pretrain_stage1_emb.yaml ran it: seeded construction, then checkpoint_4.pth.
    setup_seeds(STAGE1_SEED)
    blip = Blip2Qformer(
        vit_model="biovil", img_size=448, freeze_vit=True, num_query_token=32, cross_attention_freq=2, max_txt_len=300
    )
    blip.load_from_pretrained(str(release / "checkpoint_4.pth"))
    blip.eval()
    vis_transforms = create_chest_xray_transform_for_inference(512, center_crop_size=448)
    pixels = torch.stack([vis_transforms(image) for image in pil])
    qformer_embs = blip.forward_image(pixels)[0]

    # Classifier as demo.py loads and runs it (fp32 here: the demo casts to fp16 on a GPU).
    cp_transforms = Compose([Resize(512), CenterCrop(488), ToTensor(), ExpandChannels()])
    probabilities = {}
    for which, name in CLASSIFIER_FILES.items():
        cp_model = LitIGClassifier.load_from_checkpoint(
            str(release / CLASSIFIER_DIR / name), num_classes=14, class_names=CHEXPERT_LABELS, strict=False
        )
        cp_model.eval()
        cp_pixels = torch.stack([cp_transforms(image) for image in pil])
        probabilities[which] = torch.sigmoid(cp_model(cp_pixels))
    # demo.py's positive labels (sigmoid > 0.5), in the classifier's label order
    positive = np.asarray(CHEXPERT_LABELS)[(probabilities["best"][0] > 0.5).numpy()].tolist()

    # LLM as demo.py's init_vicuna builds it; the README's copy of pytorch_model.bin to adapter_model.bin.
    adapter = work / "adapter"
    shutil.copytree(release / ADAPTER_DIR, adapter)
    shutil.copy(adapter / "pytorch_model.bin", adapter / "adapter_model.bin")
    write_embeddings({"img0": qformer_embs[0].numpy()})
    tokenizer = LlamaTokenizer.from_pretrained(
        str(release / LLM_DIR), use_fast=False, truncation_side="left", padding_side="left"
    )
    lang_model = LlamaForCausalLM.from_pretrained(str(release / LLM_DIR))
    tokenizer.pad_token = tokenizer.unk_token
    lang_model.base_model.img_proj_layer = nn.Linear(blip.Qformer.config.hidden_size, lang_model.config.hidden_size)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<IMG>"]})
    lang_model = PeftModelForCausalLM.from_pretrained(lang_model, str(adapter), use_ram_optimized_load=False)
    lang_model.eval()
    saved = torch.load(adapter / "pytorch_model.bin", map_location="cpu")
    projection = lang_model.base_model.model.model.img_proj_layer
    assert torch.equal(projection.weight, saved["base_model.model.model.img_proj_layer.weight"])

    # RaDialog's splice looks for id 32000 (Vicuna's <IMG>); the tiny vocabulary puts <IMG> elsewhere.
    img_id = tokenizer.convert_tokens_to_ids("<IMG>")
    real_split = LlamaModel.split_at_img
    LlamaModel.split_at_img = lambda self, ids: real_split(self, torch.where(ids == img_id, RADIALOG_IMG_ID, ids))
    # The embeddings path of training and test.py (`dicom` keys into the pickled embeddings), in fp32; the
    # demo's `use_img` path reads the same embeddings from current_chat_img.pt and casts them to fp16.
    image_embeds = projection(qformer_embs)

    findings, prompt = radialog_prompt(src, positive)
    input_ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    logits = lang_model(input_ids=input_ids, dicom=["img0"]).logits
    output = lang_model.generate(
        input_ids=input_ids, dicom=["img0"], max_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1
    )
    return {
        "tensors": {
            "image_embeds": image_embeds.contiguous(),
            "qformer_embeds": qformer_embs.contiguous(),
            "classifier_probabilities": probabilities["best"].contiguous(),
            "classifier_probabilities_last": probabilities["last"].contiguous(),
            "logits": logits[0].contiguous(),
        },
        "positive_labels": positive,
        "findings": findings,
        "prompt": prompt,
        "input_ids": input_ids[0].tolist(),
        "greedy_ids": output[0, input_ids.shape[1] :].tolist(),
        "image_token_id": img_id,
    }


def inside(args: argparse.Namespace) -> None:
    import importlib.metadata as md

    # RaDialog ran torch 1.13, whose torch.load unpickles everything; torch 2.6+ loads tensors only by
    # default, which Lightning 1.6.5's checkpoint loading predates.
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    import torch

    sys.path.insert(0, str(HERE))
    import radialog_gold_env as gold
    from safetensors.torch import save_file

    src = Path(args.radialog).resolve()
    work = Path(tempfile.mkdtemp(prefix="radialog_gold_"))
    release = work / "release"
    release.mkdir()
    biovil = gold.random_biovil_t_state()
    biovil_file = work / "biovil_t_image_model_proj_size_128.pt"
    torch.save(biovil, biovil_file)
    patch_radialog(src, work, biovil_file)
    os.chdir(work)  # RaDialog writes and reads relative paths
    write_embeddings({})

    blip = build_stage1(release)
    build_language_model(release, blip.Qformer.config.hidden_size)
    skeletons = build_classifier(release, biovil)
    references = compute_references(src, release, args.images, work)

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "release").mkdir(parents=True)
    for item in ("checkpoint_4.pth", LLM_DIR, "vicuna-7b-img-report"):
        source = release / item
        (shutil.copytree if source.is_dir() else shutil.copy)(source, out / "release" / item)
    for which, entry in skeletons.items():
        torch.save(entry["skeleton"], out / f"classifier_{which}.skeleton.pt")
    save_file(references.pop("tensors"), str(out / "reference.safetensors"))
    versions = {name: md.version(name) for name in ("torch", "transformers", "peft", "pytorch_lightning",
                                                     "hi-ml-multimodal", "timm", "tokenizers", "sentencepiece",
                                                     "accelerate", "numpy")}  # fmt: skip
    manifest = {
        "made_by": "tests/reference/make_gold_release.py",
        "radialog_commit": args.commit,
        "versions": versions,
        "images": [Path(p).name for p in args.images],
        "classifier_files": CLASSIFIER_FILES,
        "stage1_seed": STAGE1_SEED,
        "tiny_bert": TINY_BERT,
        "tiny_llama": {**TINY_LLAMA, "vocab_size": LLM_VOCAB},
        **references,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    statistics = {"biovil_t": gold.state_statistics(biovil)}
    statistics |= {f"classifier_{which}": entry["statistics"] for which, entry in skeletons.items()}
    (out / "stand_in_statistics.json").write_text(json.dumps(statistics) + "\n")
    shutil.rmtree(work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--radialog", required=True, help="a checkout of RaDialog's public code")
    parser.add_argument("--venv", default="/tmp/radialog_gold_venv")
    parser.add_argument("--out", default=str(FIXTURE))
    parser.add_argument("--images", nargs="+", default=list(IMAGES))
    parser.add_argument("--commit", default="", help="RaDialog commit the checkout is from (recorded)")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        inside(args)
        return
    python = ensure_venv(Path(args.venv))
    forwarded = ["--radialog", args.radialog, "--out", args.out, "--commit", args.commit, "--images", *args.images]
    subprocess.run([str(python), __file__, "--inside", *forwarded], check=True, cwd=REPO_ROOT)


if __name__ == "__main__":
    main()
