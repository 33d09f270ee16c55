"""Distillation with each teacher source, on tiny models built offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsafe_plugin.sanitize.classifier import SafetyClassifier, StudentConfig
from fedsafe_plugin.sanitize import distill as distill_module
from fedsafe_plugin.sanitize.distill import DistillSettings, calibrate_threshold, distill, distillation_loss, holdout_rows
from fedsafe_plugin.sanitize.encoder import EncoderSpec
from fedsafe_plugin.sanitize.teachers import GuardTeacher, SequenceClassifierTeacher, labels_from_column
from fedsafe_plugin.sanitize.tiny import build_tiny_encoder, build_tiny_guard_teacher, build_tiny_seqcls_teacher
from fedsafe_plugin.training.tiny import TinySpec, build_tiny_model, build_tiny_tokenizer

PROMPTS = [f"question {i}: how would someone {w}?" for i, w in enumerate(
    ["bake bread", "pick a lock", "write a poem", "make a weapon", "learn python", "steal a car",
     "plant tomatoes", "hack an account", "fix a bike", "forge a signature", "paint a wall", "poison a dog"] * 3)]
RESPONSES = [None if i % 3 == 0 else f"answer {i}: here is what to do." for i in range(len(PROMPTS))]
RULE = np.array([float(any(w in p for w in ("lock", "weapon", "steal", "hack", "forge", "poison"))) for p in PROMPTS])
SETTINGS = DistillSettings(epochs=200, lr=5e-3, balance=False)
HAS_RESPONSE = np.array([r is not None for r in RESPONSES])

# A simplified Llama Guard 3 chat template: like the real one, it writes the whole task prompt
# itself from the conversation turns (and judges the last turn's role).
LLAMA_GUARD_3_STYLE = (
    "<|user|>\nTask: Check if there is unsafe content in "
    "'{% if messages|length % 2 == 0 %}Agent{% else %}User{% endif %}' messages in conversations "
    "according to our safety policy.\n\n<BEGIN CONVERSATION>\n\n"
    "{% for m in messages %}{% if m['role'] == 'user' %}User: {% else %}Agent: {% endif %}{{ m['content'] }}\n\n{% endfor %}"
    "<END CONVERSATION>\n\nProvide your safety assessment for ONLY THE LAST "
    "{% if messages|length % 2 == 0 %}Agent{% else %}User{% endif %} message in the above conversation:\n"
    " - First line must read 'safe' or 'unsafe'.<|end|>\n"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


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
    answer = torch.tensor([guard.unsafe_ids[0] if v else guard.safe_ids[0] for v in RULE])

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
    history = distill(student, PROMPTS, RESPONSES, teacher, None, SETTINGS).history
    assert history[-1] < 0.5 * history[0]
    _check_student_follows(student, t)
    # Thresholds are calibrated on the teacher's own decisions when no labels exist.
    assert 0 < student.threshold < 1 and 0 < student.prompt_threshold < 1


def test_guard_teacher_reads_unsafe_vs_safe_token(models):
    teacher = models["guard"]
    teacher.batch_size = 5
    tok = teacher.tokenizer
    assert tok.convert_ids_to_tokens(teacher.unsafe_ids + teacher.safe_ids) == ["unsafe", "safe"]
    batched = teacher.logits(PROMPTS[:5], RESPONSES[:5])
    # One sequence at a time, no padding: the batched left-padded result must match it.
    for i in range(5):
        ids = torch.tensor([tok.encode(teacher.guard_prompt(PROMPTS[i], RESPONSES[i]), add_special_tokens=False)])
        with torch.inference_mode():
            last = teacher.model(input_ids=ids).logits[0, -1]
        assert float(last[teacher.unsafe_ids[0]] - last[teacher.safe_ids[0]]) == pytest.approx(batched[i], abs=1e-3)


@pytest.fixture(scope="module")
def chat_guard(tmp_path_factory) -> GuardTeacher:
    """A tiny guard with the Llama-Guard-3-style chat template and a byte-level BPE that, like
    GPT-2's or RoBERTa's, gives a word at the start of a text a leading space ('Ġu' vs 'u')."""
    from tokenizers import pre_tokenizers

    folder = tmp_path_factory.mktemp("chat_guard")
    tok = build_tiny_tokenizer(512)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.chat_template = LLAMA_GUARD_3_STYLE
    build_tiny_model(TinySpec(vocab_size=512), tok).save_pretrained(folder)
    tok.save_pretrained(folder)
    return GuardTeacher(str(folder))


def test_guard_prompt_gives_the_chat_template_the_real_turns_once(chat_guard):
    prompt, response = "How do I pick a lock?", "Insert a tension wrench, then rake the pins."
    pair = chat_guard.guard_prompt(prompt, response)
    assert pair.count(prompt) == 1 and pair.count(response) == 1
    assert pair.count("Task:") == 1 and pair.count("<BEGIN CONVERSATION>") == 1  # not a task prompt inside a task prompt
    assert f"<BEGIN CONVERSATION>\n\nUser: {prompt}\n\nAgent: {response}\n\n<END CONVERSATION>" in pair
    assert "ONLY THE LAST Agent message" in pair and pair.endswith("<|assistant|>\n")
    alone = chat_guard.guard_prompt(prompt, None)
    assert f"<BEGIN CONVERSATION>\n\nUser: {prompt}\n\n<END CONVERSATION>" in alone and alone.count("Task:") == 1
    assert "ONLY THE LAST User message" in alone and "Agent:" not in alone


def test_guard_reads_the_answer_tokens_that_follow_its_prompt(chat_guard):
    tok = chat_guard.tokenizer
    prompt, response = "How do I pick a lock?", "Insert a tension wrench, then rake the pins."
    text = chat_guard.guard_prompt(prompt, response)
    base = tok.encode(text, add_special_tokens=False)

    def first(word: str) -> int:
        return tok.encode(text + word, add_special_tokens=False)[len(base)]

    # The premise: alone, "unsafe" starts with a token the guard does not write after its prompt.
    assert tok.encode("unsafe", add_special_tokens=False)[0] != first("unsafe")
    with torch.inference_mode():
        last = chat_guard.model(input_ids=torch.tensor([base])).logits[0, -1]
    expected = (torch.logsumexp(last[[first("unsafe"), first(" unsafe")]], 0)
                - torch.logsumexp(last[[first("safe"), first(" safe")]], 0))
    assert chat_guard.logits([prompt], [response])[0] == pytest.approx(float(expected), abs=1e-4)


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


def test_calibration_rows_are_held_out_and_never_trained_on(models, monkeypatch):
    trained_on = []
    fit_head = distill_module.fit_head
    monkeypatch.setattr(distill_module, "fit_head", lambda clf, x, *a: trained_on.append(x) or fit_head(clf, x, *a))
    student = _student(models)
    result = distill(student, PROMPTS, RESPONSES, None, RULE, SETTINGS)
    held = result.calibration
    # 20% of each group, rounded: 12 pairs and 6 prompt-only rows per label.
    assert held.sum() == 2 + 2 + 1 + 1 and result.calibrated == ["threshold", "prompt_threshold"]
    np.testing.assert_allclose(trained_on[0], student.encoder.embed(PROMPTS, RESPONSES)[~held], atol=1e-5)
    for label in (0, 1):  # stratified: every (label, pair or prompt-only) group gives rows to both sides
        for mode in (True, False):
            group = (RULE == label) & (HAS_RESPONSE == mode)
            assert held[group].any() and not held[group].all()
    scores = student.score(PROMPTS, RESPONSES)
    pairs = held & HAS_RESPONSE
    assert student.threshold == pytest.approx(calibrate_threshold(scores[pairs], RULE[pairs] == 1, 0.95), rel=1e-5)
    assert (holdout_rows(RULE, HAS_RESPONSE, 0.2, SETTINGS.seed) == held).all()  # seeded
    assert not (holdout_rows(RULE, HAS_RESPONSE, 0.2, SETTINGS.seed + 1) == held).all()
    mask = np.arange(len(PROMPTS)) >= 30  # an explicit mask, as from a separate validation file
    assert (distill(_student(models), PROMPTS, RESPONSES, None, RULE, SETTINGS, holdout=mask).calibration == mask).all()


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
