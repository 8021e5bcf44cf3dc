"""Four evaluation sets in their official annotation formats, each with a LLaVA question file.

Each builder gets held-out scenes (already rendered into the task's image folder) and writes:

* **VQAv2-like** (``vqav2``): ``v2_OpenEnded_mscoco_val2014_questions.json`` and
  ``v2_mscoco_val2014_annotations.json`` (10 answers per question, ``question_type``,
  ``answer_type`` in yes/no / number / other, ``multiple_choice_answer`` = the oracle answer),
  ``llava_vqav2_mscoco_val2014.jsonl``; 3 questions per image, question_id = image_id * 1000 + k.
  Families: existence, counting, colour / shape / size / position queries, reading, relations,
  same-attribute comparisons, choices; yes/no answers balanced.
* **GQA-like** (``gqa``): ``testdev_balanced_questions.json`` (dict qid -> entry with
  ``isBalanced`` true, ``types.structural`` query / verify / logical / compare / choose, so
  binary = not query), ``llava_gqa_testdev_balanced.jsonl``; 4 questions per image; yes/no balanced.
* **VizWiz-like** (``vizwiz``): ``val.json`` (list; one question per image, 10 answers,
  ``answer_type`` incl. "unanswerable", ``answerable`` 0/1; ~25% unanswerable: questions about
  absent objects or absent text), ``llava_val.jsonl`` with the VizWiz suffix.
* **TextVQA-like** (``textvqa``): ``TextVQA_0.5.1_val.json`` (``{"data": [...]}``, 10 answers,
  hex ``image_id``), ``llava_textvqa_val_v051_ocr.jsonl`` (3-line prompts with "Reference OCR
  token: ..." as LLaVA-1.5 evaluates) and ``llava_textvqa_val_v051.jsonl`` (2-line, no OCR);
  jsonl ``question_id`` holds the image_id, as LLaVA's eval_textvqa expects. Every image has at
  least one text object; up to 2 reading questions per image, distinct per image.

Chance levels are those of ``chance.chance_levels`` (the most frequent answer, scored).
"""

from __future__ import annotations

from pathlib import Path

from qmamba.data.synth import vocab
from qmamba.data.synth.answers import confidences, human_answers
from qmamba.data.synth.conversations import ocr_tokens
from qmamba.data.synth.families import Alternator, sample_questions
from qmamba.data.synth.files import write_json, write_jsonl
from qmamba.data.synth.scene import Scene, scene_rng

VQA_MIX = {
    "exist": 3.0, "verify_color": 1.0, "verify_rel": 1.5, "same_attr": 0.5, "count": 2.5, "query_color": 2.0,
    "query_shape": 1.5, "query_size": 0.7, "query_position": 1.5, "read_text": 1.0, "choose_color": 0.3,
    "choose_shape": 0.3, "choose_rel": 0.3,
}
GQA_MIX = {
    "query_color": 2.0, "query_shape": 1.5, "query_size": 0.7, "query_position": 1.5, "read_text": 0.8,
    "exist": 1.5, "verify_color": 1.0, "verify_rel": 1.5, "logic_or": 0.8, "logic_and": 0.8, "same_attr": 1.0,
    "choose_color": 0.7, "choose_shape": 0.7, "choose_size": 0.4, "choose_rel": 1.0,
}
VIZWIZ_MIX = {"query_color": 2.0, "query_shape": 1.5, "query_size": 0.5, "query_position": 1.0, "read_text": 1.0,
              "count": 1.5, "exist": 1.0}
VIZWIZ_UNANSWERABLE = 0.25


def build_vqav2(task_dir: Path, scenes: list[Scene], seed: int, stream: int, per_image: int = 3) -> dict:
    wants = Alternator()
    questions, annotations, llava = [], [], []
    for i, scene in enumerate(scenes):
        rng = scene_rng(seed, stream, i)
        image_id = i + 1
        for k, q in enumerate(sample_questions(scene, rng, VQA_MIX, per_image, wants)):
            qid = image_id * 1000 + k
            questions.append({"image_id": image_id, "question": q.text, "question_id": qid})
            answers = [{"answer": a, "answer_confidence": c, "answer_id": j + 1}
                       for j, (a, c) in enumerate(zip(human_answers(q.answer, rng), confidences(rng)))]
            annotations.append({"question_type": q.qtype, "multiple_choice_answer": q.answer, "answers": answers,
                                "image_id": image_id, "answer_type": q.answer_type, "question_id": qid})
            llava.append({"question_id": qid, "image": scene.image, "text": q.text + vocab.SHORT_ANSWER,
                          "category": "default"})
    head = {"info": {"description": "qmamba synthetic micro-world, VQAv2-like"}, "license": {"name": "CC0"},
            "data_type": "mscoco", "data_subtype": "val2014"}
    files = {"questions": "v2_OpenEnded_mscoco_val2014_questions.json",
             "annotations": "v2_mscoco_val2014_annotations.json",
             "llava_questions": "llava_vqav2_mscoco_val2014.jsonl"}
    write_json(task_dir / files["questions"], {**head, "task_type": "Open-Ended", "questions": questions})
    write_json(task_dir / files["annotations"], {**head, "annotations": annotations})
    write_jsonl(task_dir / files["llava_questions"], llava)
    return {"files": files, "questions": len(questions)}


def _gqa_entry(q, image_id: str, qid: str) -> dict:
    binary = q.structural != "query"
    return {
        "semantic": [{"operation": "select", "dependencies": [], "argument": "scene"},
                     {"operation": q.family, "dependencies": [0], "argument": q.semantic}],
        "entailed": [], "equivalent": [qid], "question": q.text, "imageId": image_id, "isBalanced": True,
        "groups": {"global": None if binary else q.family.removeprefix("query_"),
                   "local": f"{q.structural}-{q.family}"},
        "answer": q.answer, "semanticStr": f"select: scene [0]->{q.family}: {q.semantic} [1]",
        "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
        "types": {"detailed": q.family, "semantic": q.semantic, "structural": q.structural},
        "fullAnswer": f"{q.answer.capitalize()}." if q.answer in ("yes", "no") else f"The answer is {q.answer}.",
    }


def build_gqa(task_dir: Path, scenes: list[Scene], seed: int, stream: int, per_image: int = 4) -> dict:
    wants = Alternator()
    entries, llava = {}, []
    for i, scene in enumerate(scenes):
        rng = scene_rng(seed, stream, i)
        image_id = Path(scene.image).stem
        for q in sample_questions(scene, rng, GQA_MIX, per_image, wants):
            qid = str(20000000 + len(entries))
            entries[qid] = _gqa_entry(q, image_id, qid)
            llava.append({"question_id": qid, "image": scene.image, "text": q.text + vocab.SHORT_ANSWER})
    files = {"questions": "testdev_balanced_questions.json", "llava_questions": "llava_gqa_testdev_balanced.jsonl"}
    write_json(task_dir / files["questions"], entries)
    write_jsonl(task_dir / files["llava_questions"], llava)
    return {"files": files, "questions": len(entries)}


def build_vizwiz(task_dir: Path, scenes: list[Scene], seed: int, stream: int) -> dict:
    wants = Alternator()
    records, llava = [], []
    for i, scene in enumerate(scenes):
        rng = scene_rng(seed, stream, i)
        found = []
        if rng.random() < VIZWIZ_UNANSWERABLE:
            found = sample_questions(scene, rng, {"unanswerable": 1.0}, 1)
        if not found:
            found = sample_questions(scene, rng, VIZWIZ_MIX, 1, wants)
        q = found[0]
        answers = [{"answer": a, "answer_confidence": c}
                   for a, c in zip(human_answers(q.answer, rng), confidences(rng))]
        records.append({"image": scene.image, "question": q.text, "answers": answers, "answer_type": q.answer_type,
                        "answerable": int(q.answer != vocab.UNANSWERABLE)})
        llava.append({"question_id": i, "image": scene.image, "text": q.text + vocab.VIZWIZ_SUFFIX})
    files = {"annotations": "val.json", "llava_questions": "llava_val.jsonl"}
    write_json(task_dir / files["annotations"], records)
    write_jsonl(task_dir / files["llava_questions"], llava)
    return {"files": files, "questions": len(records)}


def build_textvqa(task_dir: Path, scenes: list[Scene], seed: int, stream: int, per_image: int = 2) -> dict:
    data, with_ocr, without_ocr = [], [], []
    for i, scene in enumerate(scenes):
        rng = scene_rng(seed, stream, i)
        image_id = Path(scene.image).stem
        for q in sample_questions(scene, rng, {"read_text": 1.0}, per_image):
            data.append({
                "question": q.text, "image_id": image_id, "image_classes": [], "flickr_original_url": "",
                "flickr_300k_url": "", "image_width": scene.image_size, "image_height": scene.image_size,
                "answers": human_answers(q.answer, rng), "question_tokens": q.text.lower().rstrip("?").split(),
                "question_id": len(data), "set_name": "val",
            })
            row = {"question_id": image_id, "image": scene.image}
            with_ocr.append({**row, "text": f"{q.text}{vocab.OCR_PREFIX}{ocr_tokens(scene)}{vocab.SHORT_ANSWER}"})
            without_ocr.append({**row, "text": q.text + vocab.SHORT_ANSWER})
    files = {"annotations": "TextVQA_0.5.1_val.json", "llava_questions": "llava_textvqa_val_v051_ocr.jsonl",
             "llava_questions_no_ocr": "llava_textvqa_val_v051.jsonl"}
    write_json(task_dir / files["annotations"],
               {"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data})
    write_jsonl(task_dir / files["llava_questions"], with_ocr)
    write_jsonl(task_dir / files["llava_questions_no_ocr"], without_ocr)
    return {"files": files, "questions": len(data)}
