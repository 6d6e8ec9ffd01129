"""The embedded sets' document model (a page and its question/answer pairs) and their rows in the real datasets'
column schemas (lmms-lab/DocVQA, lmms-lab/DocVQA InfographicVQA, lmms-lab/ChartQA), so one task definition serves
the embedded and the real data."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from .page import Page


@dataclass
class QA:
    question: str
    answers: list[str]
    kind: str  # question family (used for ChartQA's human/augmented split and InfoVQA's answer_type)


@dataclass
class Doc:
    page: Page
    qas: list[QA] = field(default_factory=list)
    kind: str = ""


DOCVQA_COLUMNS = (
    "questionId",
    "question",
    "question_types",
    "image",
    "docId",
    "ucsf_document_id",
    "ucsf_document_page_no",
    "answers",
    "data_split",
)  # lmms-lab/DocVQA, config DocVQA
INFOVQA_COLUMNS = (
    "questionId",
    "question",
    "answers",
    "answer_type",
    "image",
    "image_url",
    "operation/reasoning",
    "ocr",
    "data_split",
)  # lmms-lab/DocVQA, config InfographicVQA
CHARTQA_COLUMNS = ("type", "question", "answer", "image")  # lmms-lab/ChartQA


def docvqa_row(split: str, doc_id: int, q_index: int, doc: Doc, qa: QA, image) -> dict:
    return {
        "questionId": f"{split}-{doc_id}-{q_index}",
        "question": qa.question,
        "question_types": [qa.kind],
        "image": image,
        "docId": doc_id,
        "ucsf_document_id": f"emb{doc_id:06d}",
        "ucsf_document_page_no": "1",
        "answers": qa.answers,
        "data_split": split,
    }


def infovqa_row(split: str, doc_id: int, q_index: int, doc: Doc, qa: QA, image) -> dict:
    return {
        "questionId": f"{split}-{doc_id}-{q_index}",
        "question": qa.question,
        "answers": qa.answers,
        "answer_type": [qa.kind],
        "image": image,
        "image_url": "",
        "operation/reasoning": [],
        "ocr": json.dumps(doc.page.lines()),
        "data_split": split,
    }


def chartqa_row(split: str, doc_id: int, q_index: int, doc: Doc, qa: QA, image) -> dict:
    return {
        "type": f"{qa.kind}_{'test' if split != 'train' else 'train'}",
        "question": qa.question,
        "answer": qa.answers[0],
        "image": image,
    }
