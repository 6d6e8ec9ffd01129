"""Tiny Hugging Face models and datasets in the real schemas, saved to disk the way a user's copies are, so tests
load them through exactly the code a real run takes (no network: everything is built here).

- `save_pair`: a tiny SigLIP vision tower (+ image processor) and a tiny Llama (+ tokenizer), with or without a
  Llama-3-style chat template, written with save_pretrained.
- `real_schema_rows`: rows in lmms-lab/DocVQA (DocVQA, InfographicVQA) or lmms-lab/ChartQA columns, from the
  embedded generators; `m4_chartqa`: the same ChartQA rows in HuggingFaceM4/ChartQA's train schema.
- `cache_hub_dataset` / `cache_hub_model`: a dataset or model laid out in the Hugging Face cache exactly as a
  previous download leaves it, so offline runs can find it by its hub id.
- `tiled_pages`: three pages that a pair of 32 x 32 tiles cuts into different grids.
"""

from __future__ import annotations

import shutil
from pathlib import Path

LLAMA3_STYLE_TEMPLATE = (
    "{{ bos_token }}<|start_header_id|>system<|end_header_id|>\n\nToday Date: {{ date_string }}<|eot_id|>"
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHAT_SPECIALS = [
    "<|begin_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<|finetune_right_pad_id|>",
]


def make_tokenizer(chat: bool = False, bos: bool = False):
    """The embedded character tokenizer; `chat` adds Llama 3's special tokens and a chat template (EOS = <|eot_id|>,
    no pad token, so the loader must pick one); `bos` makes it put a BOS token first, as Llama's tokenizer does."""
    from tokenizers import processors

    from alignbench.backbones.tiny import make_tokenizer as character_tokenizer

    tok = character_tokenizer()
    if chat:
        tok.add_special_tokens({"additional_special_tokens": CHAT_SPECIALS})
        tok.bos_token, tok.eos_token = "<|begin_of_text|>", "<|eot_id|>"
        tok.pad_token = None
        tok.chat_template = LLAMA3_STYLE_TEMPLATE
    if bos:
        tok.add_special_tokens({"bos_token": "<s>"})
        tok._tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tok.convert_tokens_to_ids("<s>"))]
        )
    return tok


def save_pair(
    root: Path, chat: bool = False, image_size: int = 32, patch: int = 16, full_siglip: bool = False, bos: bool = False
) -> tuple[Path, Path]:
    """(vision folder, llm folder): a SigLIP tower of (image_size / patch)^2 patches and a 1-layer Llama."""
    import torch
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        SiglipConfig,
        SiglipImageProcessor,
        SiglipModel,
        SiglipVisionConfig,
        SiglipVisionModel,
    )

    torch.manual_seed(0)
    root = Path(root)
    vcfg = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
    )
    if full_siglip:  # the full SigLIP checkpoint (text and vision), as google/siglip-so400m-patch14-384 is
        vision = SiglipModel(
            SiglipConfig(
                vision_config=vcfg,
                text_config=dict(
                    hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64
                ),
            )
        )
    else:
        vision = SiglipVisionModel(SiglipVisionConfig(**vcfg))
    vision.save_pretrained(root / "vision")
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(root / "vision")
    tok = make_tokenizer(chat, bos)
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            tie_word_embeddings=False,
            eos_token_id=tok.eos_token_id,
        )
    )
    llm.save_pretrained(root / "llm")
    tok.save_pretrained(root / "llm")
    return root / "vision", root / "llm"


def real_schema_rows(task: str, split: str, n: int, seed: int = 0, size: tuple[int, int] | None = None):
    """A `datasets.Dataset` of `n` questions (eval) or pages (train) in the task's real column schema; pages
    resized to `size` when given (e.g. wide or tall pages for tiling)."""
    import io

    import datasets

    from alignbench.backbones.prepared import cache_root
    from alignbench.config.data import DataConfig
    from alignbench.data.embedded.dataset import embedded_dataset
    from alignbench.data.embedded.page import PageSpec

    cfg = DataConfig(train_docs=n, eval_questions=n, seed=seed)
    ds = embedded_dataset(task, split, cfg, PageSpec(), cache_root())
    if size is None:
        return ds

    def resize(row):
        from PIL import Image

        buf = io.BytesIO()
        Image.open(io.BytesIO(row["image"]["bytes"])).resize(size).save(buf, format="PNG")
        return {"image": {"bytes": buf.getvalue(), "path": None}}

    raw = ds.cast_column("image", datasets.Image(decode=False))
    rows = [dict(r) | resize(r) for r in raw]
    return datasets.Dataset.from_list(rows, features=raw.features).cast_column("image", datasets.Image())


def m4_chartqa(ds):
    """ChartQA rows in HuggingFaceM4/ChartQA's train schema: query, label (a list), human_or_machine (class label)."""
    import datasets

    rows = [
        {
            "image": r["image"],
            "query": r["question"],
            "label": [r["answer"]],
            "human_or_machine": 0 if r["type"] == "human_test" else 1,
        }
        for r in ds.cast_column("image", datasets.Image(decode=False))
    ]
    features = datasets.Features(
        {
            "image": datasets.Image(),
            "query": datasets.Value("string"),
            "label": datasets.Sequence(datasets.Value("string")),
            "human_or_machine": datasets.ClassLabel(names=["human", "machine"]),
        }
    )
    return datasets.Dataset.from_list(rows, features=features)


def cache_hub_dataset(hf_home: Path, repo_id: str, config: str | None, splits: dict, workdir: Path) -> None:
    """Lay `splits` ({name: Dataset}) out under HF_HOME/datasets as `load_dataset(repo_id, config)` leaves a hub
    download: ORG___NAME/CONFIG/0.0.0/HASH/{name-split.arrow, dataset_info.json}, written by the datasets
    library's own parquet builder."""
    from datasets.naming import camelcase_to_snakecase
    from datasets.packaged_modules.parquet.parquet import Parquet

    files = {}
    for name, ds in splits.items():
        files[name] = str(workdir / f"{name}.parquet")
        ds.to_parquet(files[name])
    org, name = repo_id.split("/")
    builder = Parquet(
        cache_dir=str(workdir / "build"),
        dataset_name=name,
        config_name=config or "default",
        hash="0000000000000000000000000000000000000000",
        data_files=files,
    )
    builder.download_and_prepare()
    target = Path(hf_home) / "datasets" / f"{org}___{camelcase_to_snakecase(name)}" / (config or "default") / "0.0.0"
    target.mkdir(parents=True, exist_ok=True)
    shutil.move(builder.cache_dir, target / "0000000000000000000000000000000000000000")


def cache_hub_model(hf_home: Path, repo_id: str, folder: Path) -> None:
    """Copy a save_pretrained folder into HF_HOME/hub as a downloaded snapshot of `repo_id` (refs/main -> it)."""
    revision = "0" * 40
    repo = Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / revision)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(revision)


def tiled_pages() -> list:
    """64 x 32, 32 x 32 and 128 x 128 pages (with 32 x 32 tiles: 2 tiles and a thumbnail, 1 tile, 2 x 2 tiles and a
    thumbnail), each with a coloured box so that their features differ."""
    from PIL import Image

    pages = [Image.new("RGB", (64, 32), "white"), Image.new("RGB", (32, 32), "gray"), Image.new("RGB", (128, 128))]
    for k, page in enumerate(pages):
        page.paste((40 * k, 200, 90), (3, 5, 20, 17))
    return pages
