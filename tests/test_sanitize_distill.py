"""Distillation with each teacher source, on tiny models built offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsafe_plugin.sanitize.classifier import SafetyClassifier, StudentConfig
from fedsafe_plugin.sanitize.distill import DistillSettings, calibrate_threshold, distill, distillation_loss
from fedsafe_plugin.sanitize.encoder import EncoderSpec
from fedsafe_plugin.sanitize.teachers import GuardTeacher, SequenceClassifierTeacher, labels_from_column
from fedsafe_plugin.sanitize.tiny import build_tiny_encoder, build_tiny_guard_teacher, build_tiny_seqcls_teacher

PROMPTS = [f"question {i}: how would someone {w}?" for i, w in enumerate(
    ["bake bread", "pick a lock", "write a poem", "make a weapon", "learn python", "steal a car",
     "plant tomatoes", "hack an account", "fix a bike", "forge a signature", "paint a wall", "poison a dog"] * 3)]
RESPONSES = [None if i % 3 == 0 else f"answer {i}: here is what to do." for i in range(len(PROMPTS))]
RULE = np.array([float(any(w in p for w in ("lock", "weapon", "steal", "hack", "forge", "poison"))) for p in PROMPTS])
SETTINGS = DistillSettings(epochs=200, lr=5e-3, balance=False)


def _teach(model, batches, steps: int = 40) -> None:
    """A few Adam steps so the untrained tiny teacher has input-dependent opinions (the RULE)."""
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for step in range(steps):
        loss = batches(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    torch.manual_seed(0)
    seqcls = SequenceClassifierTeacher(build_tiny_seqcls_teacher(root / "seqcls"))
    enc = seqcls.tokenizer(PROMPTS, [r or "" for r in RESPONSES], padding=True, return_tensors="pt")
    y = torch.tensor(RULE, dtype=torch.long)
    _teach(seqcls.model, lambda _: torch.nn.functional.cross_entropy(seqcls.model(**enc).logits, y))

    # A short policy prompt keeps the tiny guard's sequences (and this fixture) small.
    guard = GuardTeacher(build_tiny_guard_teacher(root / "guard"), template="{conversation}\nIs {role} safe?")
    tok = guard.tokenizer
    seqs = [tok.encode(guard.guard_prompt(p, r), add_special_tokens=False) for p, r in zip(PROMPTS, RESPONSES)]
    answer = torch.tensor([guard.unsafe_id if v else guard.safe_id for v in RULE])

    def guard_loss(step: int) -> torch.Tensor:
        i = step % len(seqs)
        idx = [(i + k) % len(seqs) for k in range(6)]
        logits = torch.stack([guard.model(input_ids=torch.tensor([seqs[j]])).logits[0, -1] for j in idx])
        return torch.nn.functional.cross_entropy(logits, answer[idx])

    _teach(guard.model, guard_loss)
    return {"encoder": build_tiny_encoder(root / "enc"), "seqcls": seqcls, "guard": guard}


def _student(models) -> SafetyClassifier:
    torch.manual_seed(0)
    return SafetyClassifier(StudentConfig(encoder=EncoderSpec(models["encoder"], max_length=64), hidden=64))


def _check_student_follows(student: SafetyClassifier, teacher_logits: np.ndarray) -> None:
    """The teacher has input-dependent opinions, and the student's log-odds track them (the KL target)."""
    assert np.std(teacher_logits) > 0.5 and ((teacher_logits > 0) == RULE.astype(bool)).mean() >= 0.7, teacher_logits
    s = student.score(PROMPTS, RESPONSES)
    student_logits = np.log(s / (1 - s))
    assert np.corrcoef(student_logits, teacher_logits)[0, 1] > 0.8
    assert ((s >= 0.5) == (teacher_logits > 0)).mean() >= 0.85


def test_sequence_classifier_teacher(models):
    teacher = models["seqcls"]
    assert teacher.unsafe_index == 1  # found by label name
    t = teacher.logits(PROMPTS, RESPONSES)
    student = _student(models)
    history = distill(student, PROMPTS, RESPONSES, teacher, None, SETTINGS)
    assert history[-1] < 0.5 * history[0]
    _check_student_follows(student, t)
    # Thresholds are calibrated on the teacher's own decisions when no labels exist.
    assert 0 < student.threshold < 1 and 0 < student.prompt_threshold < 1


def test_guard_teacher_reads_unsafe_vs_safe_token(models):
    teacher = models["guard"]
    teacher.batch_size = 5
    tok = teacher.tokenizer
    assert tok.convert_ids_to_tokens([teacher.unsafe_id, teacher.safe_id]) == ["unsafe", "safe"]
    batched = teacher.logits(PROMPTS[:5], RESPONSES[:5])
    # One sequence at a time, no padding: the batched left-padded result must match it.
    for i in range(5):
        ids = torch.tensor([tok.encode(teacher.guard_prompt(PROMPTS[i], RESPONSES[i]), add_special_tokens=False)])
        with torch.inference_mode():
            last = teacher.model(input_ids=ids).logits[0, -1]
        assert float(last[teacher.unsafe_id] - last[teacher.safe_id]) == pytest.approx(batched[i], abs=1e-3)


def test_guard_teacher_distillation(models):
    teacher = models["guard"]
    t = teacher.logits(PROMPTS, RESPONSES)
    student = _student(models)
    distill(student, PROMPTS, RESPONSES, teacher, None, SETTINGS)
    _check_student_follows(student, t)


def test_label_column_teacher(models):
    rows = [{"prompt": p, "label": "harmful" if i % 2 else "benign"} for i, p in enumerate(PROMPTS)]
    labels = labels_from_column(rows, "label")
    student = _student(models)
    distill(student, PROMPTS, RESPONSES, None, labels, SETTINGS)
    pred = student.score(PROMPTS, RESPONSES) >= 0.5
    assert (pred == labels.astype(bool)).mean() >= 0.95
    with pytest.raises(ValueError, match="row 2"):
        labels_from_column([{"y": 1}, {"y": "maybe"}], "y")


def test_loss_weights_kl_and_ce():
    s = torch.tensor([0.3, -1.0, 2.0])
    t = torch.tensor([1.0, float("nan"), -0.5])
    y = torch.tensor([1.0, 0.0, float("nan")])
    T, a = 2.0, 0.25
    p = torch.sigmoid(t / T)
    q = torch.sigmoid(s / T)
    kl = (p * torch.log(p / q) + (1 - p) * torch.log((1 - p) / (1 - q))) * T * T
    ce = torch.nn.functional.binary_cross_entropy_with_logits(s, torch.nan_to_num(y), reduction="none")
    # row 0: both terms weighted; row 1: CE only; row 2: KL only.
    expected = (a * kl[0] + (1 - a) * ce[0] + ce[1] + kl[2]) / 3
    assert float(distillation_loss(s, t, y, a, T)) == pytest.approx(float(expected), rel=1e-5)


def test_calibrated_threshold_reaches_recall():
    rng = np.random.default_rng(0)
    scores = rng.random(1000)
    unsafe = rng.random(1000) < scores
    thr = calibrate_threshold(scores, unsafe, 0.95)
    assert (scores[unsafe] >= thr).mean() >= 0.95
    assert (scores[unsafe] >= np.nextafter(thr, 1)).mean() < 0.95  # the highest such threshold


def test_save_load_round_trip(models, tmp_path):
    student = _student(models)
    student.config.threshold, student.config.prompt_threshold = 0.3, 0.7
    before = student.score(PROMPTS[:4], RESPONSES[:4])
    student.save(tmp_path / "s")
    loaded = SafetyClassifier.load(tmp_path / "s")
    assert np.allclose(loaded.score(PROMPTS[:4], RESPONSES[:4]), before)
    assert (loaded.threshold, loaded.prompt_threshold) == (0.3, 0.7)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["head.safetensors", "student.json"]
