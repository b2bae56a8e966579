"""The benchmarks' own scorers on hand-made cases.

Every expected score below was worked out by running the official file named above its table on the
same case (the official function, copied into a scratch file outside the repository, fed the case
as the annotation and result files it reads): zackschen/CoIN @ 4122465 (``ETrain/Eval/LLaVA/CoIN/``)
and Ghy0501/MCITlib @ 2956dfd (``DISCO/llava/eval/``; the other method folders hold the same files).
The ``*_strict`` variants have no official code; their expectations are worked out by hand.
"""

import shutil

import pytest
from datasets import Dataset

from cltune.data.task import Task
from cltune.evaluation.evaluator import score_predictions
from cltune.evaluation.metrics import get_metric
from cltune.evaluation.scorers.vqa import normalize_vqa_answer

# m4c_evaluator.py, TextVQAAccuracyEvaluator.eval_pred_list (called by CoIN's eval_textvqa.py)
TEN = ["two", "2", "Two", "2", "three", "3", "3", "coca cola", "yes", "yes"]
TEXTVQA = [
    ("2", TEN, 1.0),  # four annotators say two/2/Two/2
    ("Two.", TEN, 1.0),  # casing, period, number word
    ("three", TEN, 0.9),  # three annotators: 7 subsets keep 3 (1.0), 3 subsets keep 2 (2/3)
    ("YES!", TEN, 0.6),  # two annotators: 8 × 2/3 + 2 × 1/3, over 10
    ("Coca-Cola", TEN, 0.3),  # a hyphen inside a word becomes a space
    ("the coca cola", TEN, 0.3),  # articles go
    ("", TEN, 0.0),  # empty output
    ("none", ["0", "zero", "none", "0", "nothing", "no", "no", "no", "no", "no"], 1.0),  # none → 0
    ("dont know", ["don't know"] * 2 + ["dont know"] + ["unknown"] * 7, 0.9),  # the apostrophe comes back
    (
        "3.5",
        ["3.5", "35", "3.5", "3.5", "35", "35", "35", "3 5", "3.50", "3.5"],
        1.0,
    ),  # a decimal point stays
    (
        "10:30 a.m.",
        [
            "10:30 am",
            "10:30",
            "10:30 am",
            "10:30 am",
            "1030",
            "10:30",
            "10:30",
            "10:30am",
            "10:30 am",
            "ten thirty",
        ],
        1.0,
    ),
]

# eval_vizwiz.py and eval_vqav2.py, eval_single (same rule in CoIN and MCITlib)
COIN_EXACT = [
    ("Yes", "yes", 1.0),
    ("yes.", "yes", 0.0),
    ("Two", "2", 0.0),
    ("", "unanswerable", 0.0),
    ("UNANSWERABLE", "unanswerable", 1.0),
    (" yes", "yes", 0.0),
]

# MCITlib eval_deepseek_r1.py, eval_single (UCIT's ImageNet-R, ArxivQA, IconQA, CLEVR-Math)
MCITLIB_EXACT = [
    ("B", "B", 1.0),
    ("b", "B", 1.0),
    ("The answer is (B).", "B", 0.0),
    ("(B)", "B", 0.0),
    ("3.0", "3", 0.0),
    ("3", "3", 1.0),
    ("three", "3", 0.0),
    ("", "3", 0.0),
    ("Golden Retriever", "golden retriever", 1.0),
    ("golden retriever ", "golden retriever", 0.0),
]

# CoIN eval_ImagetNet.py, eval_single
IMAGENET = [
    ("golden retriever", "golden retriever", 1.0),
    ("Golden retriever", "golden retriever", 0.0),
    ("a golden retriever dog", "golden retriever", 1.0),
    ("dog", "hot dog", 1.0),
    ("", "goldfish", 1.0),
    (" goldfish", "goldfish", 1.0),
    ("tench", "goldfish", 0.0),
]

# CoIN eval_ocrvqa.py, eval_single
OCRVQA = [
    ("Harry Potter", "harry potter", 1.0),
    ("Unanswerable", "Unanswerable", 0.0),
    ("unanswerable", "Unanswerable", 1.0),
    ("Yes.", "Yes", 0.0),
    ("Not Unanswerable", "No", 0.0),
]

# CoIN eval_grounding.py, eval_single (size [640, 480]), then grounding_strict by hand
BOX = "[0.12, 0.34, 0.56, 0.78]"
GROUNDING = [
    (BOX, BOX, 1.0, 1.0),  # read as [0.12, 0.34, 0.56, 0.7]: IoU 0.82
    ("[0.1, 0.2, 0.5, 0.6]", "[0.1, 0.2, 0.5, 0.6]", 0.0, 1.0),  # read as [0.1, 0.2, 0.5, 0.0]
    (f"The box is {BOX}.", BOX, 0.0, 1.0),  # a box given inside text
    ("0.12, 0.34, 0.56, 0.78", BOX, 1.0, 0.0),  # no brackets: the strict reader wants [x1, y1, x2, y2]
    ("[0.12,0.34,0.56,0.78,0.9]", BOX, 0.0, 0.0),  # five numbers
    ("", BOX, 0.0, 0.0),  # empty output
    ("[0.00, 0.00, 0.50, 1.000]", "[0.00, 0.00, 0.25, 1.00]", 0.0, 1.0),  # IoU exactly 0.5: > vs ≥
    ("[0.00, 0.00, 0.50, 1.000]", "[0.00, 0.00, 0.30, 1.00]", 1.0, 1.0),  # IoU 0.6
    ("[0.60, 0.60, 0.90, 0.900]", "[0.00, 0.00, 0.30, 0.30]", 0.0, 0.0),  # disjoint
]

# CoIN eval_science_qa.py (__main__ and get_pred_idx) on a one-problem problems.json
CHOICES3, CHOICES4 = ["cat", "dog", "ship"], ["cat", "dog", "ship", "hen"]
SCIENCEQA = [
    ("B", "B", CHOICES3, 1.0),
    ("B. dog", "B", CHOICES3, 1.0),
    ("The answer is (B).", "B", CHOICES3, 1.0),
    ("(B)", "B", CHOICES3, 1.0),
    ("b", "B", CHOICES3, 1.0),
    ("B.", "B", CHOICES3, 1.0),
    ("dog", "B", CHOICES3, 0.0),  # a bare option text has no single-character word: FAILED
    ("a cat", "A", CHOICES3, 1.0),  # the article "a" is read as the letter A
    ("I think it is B", "B", CHOICES3, 0.0),  # "I" comes first
    ("D", "D", CHOICES4, 1.0),
    ("E", "B", CHOICES4, 0.0),
    ("", "A", CHOICES3, 0.0),
    ("3 legs", "C", CHOICES3, 0.0),
    ("Answer: C", "C", CHOICES3, 1.0),
]


@pytest.mark.parametrize(("prediction", "answers", "expected"), TEXTVQA)
def test_textvqa_matches_m4c_evaluator(prediction, answers, expected):
    assert get_metric("textvqa")(prediction, answers[0], answers=answers) == pytest.approx(expected)


@pytest.mark.parametrize("name", ["vizwiz", "vqav2"])
@pytest.mark.parametrize(("prediction", "answer", "expected"), COIN_EXACT)
def test_coin_vizwiz_and_vqav2_compare_upper_cased_strings(name, prediction, answer, expected):
    assert get_metric(name)(prediction, answer) == expected


@pytest.mark.parametrize("name", ["imagenet_r", "arxivqa", "iconqa", "clevr_math"])
@pytest.mark.parametrize(("prediction", "answer", "expected"), MCITLIB_EXACT)
def test_ucit_tasks_compare_upper_cased_strings(name, prediction, answer, expected):
    assert get_metric(name)(prediction, answer) == expected


@pytest.mark.parametrize(("prediction", "answer", "expected"), IMAGENET)
def test_coin_imagenet_accepts_containment_either_way(prediction, answer, expected):
    assert get_metric("imagenet")(prediction, answer) == expected


def test_imagenet_strict_closes_the_empty_and_casing_loopholes():
    strict = get_metric("imagenet_strict")
    assert strict("", "goldfish") == 0.0 and strict("Golden retriever", "golden retriever") == 1.0
    assert strict("a golden retriever dog", "golden retriever") == 1.0 and strict("tench", "goldfish") == 0.0


@pytest.mark.parametrize(("prediction", "answer", "expected"), OCRVQA)
def test_coin_ocrvqa(prediction, answer, expected):
    assert get_metric("ocrvqa")(prediction, answer) == expected


@pytest.mark.parametrize(("prediction", "answer", "official", "strict"), GROUNDING)
def test_grounding_reads_the_box_as_coin_does_and_strictly(prediction, answer, official, strict):
    assert get_metric("grounding")(prediction, answer) == official
    assert get_metric("grounding_strict")(prediction, answer) == strict


def test_grounding_names_a_malformed_answer_box():
    with pytest.raises(ValueError, match=r"not a box: write it as '\[x1, y1, x2, y2\]'"):
        get_metric("grounding")(BOX, "0.1 0.2")


@pytest.mark.parametrize(("prediction", "answer", "choices", "expected"), SCIENCEQA)
def test_scienceqa_letter_extraction(prediction, answer, choices, expected):
    assert get_metric("scienceqa")(prediction, answer, choices=choices) == expected
    right_text = choices["ABCDE".index(answer)] if answer in "ABCDE"[: len(choices)] else None
    if right_text is not None:  # the answer given as its option text scores the same
        assert get_metric("scienceqa")(prediction, right_text, choices=choices) == expected


def test_scienceqa_needs_choices_and_a_known_answer():
    with pytest.raises(ValueError, match="'choices' column"):
        get_metric("scienceqa")("B", "B")
    with pytest.raises(ValueError, match="neither an option letter"):
        get_metric("scienceqa")("B", "horse", choices=CHOICES3)


def test_normalisation_keeps_evalai_quirks():
    assert normalize_vqa_answer("Im here") == "im here"  # the table's key is "Im": lower-cased words miss it
    assert normalize_vqa_answer("somebody'd") == "somebodyd"  # an entry that maps the other way
    assert normalize_vqa_answer("." * 40) == "." * 8  # only the first 32 periods go


REFS = [
    ["a dog runs on the grass", "A brown dog running on grass.", "a dog playing outside"],
    ["two people sit on a bench", "Two men sitting on a park bench.", "people on a bench"],
    ["A red car parked on the street.", "a red car on a road", "red car"],
]


def _caption_task(references):
    rows = {
        "question": ["Describe the image."] * len(references),
        "answer": [r[0] for r in references],
        "answers": references,
    }
    return Task(name="captions", train=Dataset.from_dict(rows), test=Dataset.from_dict(rows), metric="cider")


# pycocoevalcap's PTB tokenizer runs the Stanford CoreNLP jar: no Java, no CIDEr (the scorer says so).
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="CIDEr's PTB tokenizer needs java")


# MCITlib eval_caption.py, create_coco_type + eval_single (pycocoevalcap's COCOEvalCap; CIDEr × 100)
@needs_java
@pytest.mark.parametrize(
    ("predictions", "expected"),
    [
        (["A dog runs on the grass.", "Two people sit on a bench", "a red car"], 440.2868292973818),
        (["a dog runs on the grass", "two people sit on a bench.", "A RED CAR!"], 440.2868292973818),  # PTB
        (["A dog runs on the grass.", "", "a red car"], 278.2002975735003),  # an empty caption
    ],
)
def test_cider_is_scored_over_the_whole_split(predictions, expected):
    assert score_predictions(_caption_task(REFS), predictions) == pytest.approx(expected, rel=1e-9)


@needs_java
def test_cider_depends_on_the_other_rows():
    """Corpus-level: the same row scores differently beside other references (document frequencies)."""
    alone = get_metric("cider")(["a dog runs on the grass"] * 2, [REFS[0], REFS[1]])
    beside_same = get_metric("cider")(["a dog runs on the grass"] * 2, [REFS[0], REFS[0]])
    assert alone != pytest.approx(beside_same)
