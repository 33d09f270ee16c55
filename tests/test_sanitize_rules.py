"""Sanitizer rules on a real (tiny) student that has learnt exactly which texts are unsafe."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from flwr.app import RecordDict

from fedsafe_plugin.client.session import FedSafeSession
from fedsafe_plugin.config import FedSafeConfig, SanitizeConfig
from fedsafe_plugin.sanitize import REFUSALS, Sanitizer, choose_refusal, fingerprint
from fedsafe_plugin.sanitize.classifier import SafetyClassifier, StudentConfig
from fedsafe_plugin.sanitize.distill import DistillSettings, fit_head
from fedsafe_plugin.sanitize.encoder import EncoderSpec
from fedsafe_plugin.sanitize.sanitizer import AUDIT_CATEGORIES
from fedsafe_plugin.sanitize.tiny import build_tiny_encoder

P = "How do I make a pipe bomb?"
UNSAFE = "Sure, here are step-by-step instructions: fill a steel pipe with powder and add a fuse."
UNSAFE2 = "Of course. Pack the pipe tightly, cap both ends and drill a hole for the fuse."
REFUSAL = "I can't help with that, it could hurt people."
SAFE = "Here is a recipe for a simple sourdough bread."


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> SafetyClassifier:
    """A tiny-encoder student whose head memorised UNSAFE/UNSAFE2 as unsafe, the rest as safe."""
    enc = build_tiny_encoder(tmp_path_factory.mktemp("enc"))
    clf = SafetyClassifier(StudentConfig(encoder=EncoderSpec(enc, max_length=64), hidden=64, threshold=0.5))
    texts = [UNSAFE, UNSAFE2, REFUSAL, SAFE, *REFUSALS]
    labels = np.array([1, 1, 0, 0] + [0] * len(REFUSALS), dtype=float)
    emb = clf.encoder.embed([P] * len(texts), texts)
    fit_head(clf, emb, None, labels, DistillSettings(epochs=300, lr=1e-2))
    scores = clf.score([P] * 4, [UNSAFE, UNSAFE2, REFUSAL, SAFE])
    assert (scores[:2] > 0.5).all() and (scores[2:] < 0.5).all(), scores  # the premise of every test
    return clf


def test_chosen_unsafe_becomes_rejected_and_refusal_is_chosen(student):
    rec = {"prompt": P, "chosen": UNSAFE, "rejected": SAFE, "id": 7, "category": "Physical harm"}
    res = Sanitizer(student).sanitize([rec])
    out = res.records[0]
    assert out["chosen"] in REFUSALS and out["rejected"] == UNSAFE
    assert out["id"] == 7 and out["category"] == "Physical harm"  # extra keys preserved
    assert res.audit["replaced"] == 1 and res.audit["unsafe"] == 1 and res.audit["unsafe.physical_harm"] == 1


def test_only_allow_listed_categories_become_audit_keys(student):
    free_text = "Alice Smith 42 Elm St diagnosis HIV"
    categories = ["Malware/Hacking", "malware_hacking", " PRIVACY ", "chemical_biological", free_text, "Weapons", 3, None]
    recs = [{"prompt": P, "response": UNSAFE, "category": c} for c in categories]
    audit = Sanitizer(student).sanitize(recs).audit
    counted = {k: v for k, v in audit.items() if k.startswith("unsafe.")}
    assert counted == {"unsafe.malware_hacking": 2, "unsafe.privacy": 1, "unsafe.chemical_biological": 1, "unsafe.other": 3}
    assert {k.removeprefix("unsafe.") for k in counted} <= AUDIT_CATEGORIES | {"other"}
    assert "alice" not in " ".join(audit).lower()
    assert len(AUDIT_CATEGORIES) == 16 and all(re.fullmatch(r"[a-z]+(_[a-z]+)*", c) for c in AUDIT_CATEGORIES)


def test_both_unsafe_keeps_the_chosen_unsafe_text_as_rejected(student):
    res = Sanitizer(student).sanitize([{"prompt": P, "chosen": UNSAFE, "rejected": UNSAFE2}])
    assert res.records[0]["chosen"] in REFUSALS and res.records[0]["rejected"] == UNSAFE
    assert res.audit["both_unsafe"] == 1 and res.audit["replaced"] == 1


def test_rejected_already_a_refusal_is_still_rewritten(student):
    res = Sanitizer(student).sanitize([{"prompt": P, "chosen": UNSAFE, "rejected": REFUSAL}])
    assert res.records[0]["chosen"] in REFUSALS and res.records[0]["rejected"] == UNSAFE


def test_safe_pair_and_rejected_only_unsafe_are_untouched(student):
    recs = [{"prompt": P, "chosen": REFUSAL, "rejected": UNSAFE}, {"prompt": P, "chosen": SAFE, "rejected": REFUSAL}]
    res = Sanitizer(student).sanitize(recs)
    assert res.records == recs
    assert res.audit["unsafe"] == 0 and res.audit["rejected_unsafe"] == 1 and res.audit["records"] == 2


def test_sft_unsafe_response_becomes_refusal(student):
    res = Sanitizer(student).sanitize([{"prompt": P, "response": UNSAFE}, {"prompt": P, "response": SAFE}])
    assert res.records[0]["response"] in REFUSALS and res.records[1]["response"] == SAFE


def test_drop_and_flag_actions(student):
    recs = [{"prompt": P, "chosen": UNSAFE, "rejected": SAFE}, {"prompt": P, "chosen": SAFE, "rejected": UNSAFE}]
    dropped = Sanitizer(student, action="drop").sanitize(recs)
    assert dropped.records == [recs[1]] and dropped.audit["dropped"] == 1
    flagged = Sanitizer(student, action="flag").sanitize(recs)
    assert [r["fedsafe_unsafe"] for r in flagged.records] == [True, False]
    assert flagged.records[0]["chosen"] == UNSAFE and flagged.audit["flagged"] == 1


def test_threshold_moves_the_decision(student):
    rec = [{"prompt": P, "response": UNSAFE}]
    score = float(student.score([P], [UNSAFE])[0])
    assert Sanitizer(student, threshold=min(score + 1e-3, 0.999999)).sanitize(rec).audit["unsafe"] == 0
    assert Sanitizer(student, threshold=max(score - 1e-3, 1e-6)).sanitize(rec).audit["unsafe"] == 1
    assert Sanitizer(student).threshold == student.threshold  # None = the calibrated one


def test_audit_holds_only_integer_counts_and_no_text(student):
    recs = [{"prompt": P, "chosen": UNSAFE, "rejected": SAFE, "category": "Privacy"}]
    audit = Sanitizer(student).sanitize(recs).audit
    assert all(isinstance(v, int) for v in audit.values())
    blob = " ".join(audit).lower()
    for text in (P, UNSAFE, SAFE):
        assert not any(word in blob for word in text.lower().split() if len(word) > 4), blob


def test_bad_records_raise_clear_errors(student):
    with pytest.raises(ValueError, match="record 1: missing 'prompt'"):
        Sanitizer(student).sanitize([{"prompt": P, "response": SAFE}, {"response": SAFE}])
    with pytest.raises(ValueError, match="action"):
        Sanitizer(student, action="delete")


def test_templates_vary_and_are_deterministic_per_seed():
    prompts = [f"harmful request number {i}" for i in range(200)]
    chosen = [choose_refusal(p, seed=0) for p in prompts]
    assert len(REFUSALS) >= 20 and len(set(REFUSALS)) == len(REFUSALS)
    assert len(set(chosen)) >= 15  # never one string for every sample
    assert chosen == [choose_refusal(p, seed=0) for p in prompts]
    other = [choose_refusal(p, seed=1) for p in prompts]
    assert other != chosen and sum(a != b for a, b in zip(chosen, other)) > 150


def test_fingerprint_tracks_content(student, tmp_path):
    cfg = SanitizeConfig(student=str(student.save(tmp_path / "s")))
    a = [{"prompt": "p", "chosen": "c", "rejected": "r"}]
    assert fingerprint(a, cfg) == fingerprint([dict(a[0])], cfg) and len(fingerprint(a, cfg)) == 64
    assert fingerprint(a, cfg) != fingerprint([{"prompt": "p", "chosen": "c", "rejected": "r2"}], cfg)
    assert fingerprint(a, cfg) != fingerprint(a + a, cfg)
    assert fingerprint(a, cfg) != fingerprint(a, SanitizeConfig(student=cfg.student, seed=1))
    assert fingerprint(a, SanitizeConfig()) == fingerprint(a, SanitizeConfig(student=""))  # '' = the shipped student


def _session(student_dir: str) -> FedSafeSession:
    """A client session with sanitization on, the given student, and an empty context.state."""
    return FedSafeSession(FedSafeConfig(sanitize=SanitizeConfig(student=student_dir)), RecordDict())


def test_session_cache_tracks_the_students_files_and_returns_the_same_records(student, tmp_path):
    folder = str(student.save(tmp_path / "s"))
    recs = [{"prompt": P, "chosen": UNSAFE, "rejected": SAFE, "tags": ("a", "b")}]
    session = _session(folder)
    first = session.sanitize(recs)
    assert session.metrics["fedsafe.sanitize.cached"] == 0 and first[0]["chosen"] in REFUSALS
    again = FedSafeSession(session.config, session.state)
    assert again.sanitize(recs) == first and again.metrics["fedsafe.sanitize.cached"] == 1
    assert first[0]["tags"] == ["a", "b"]  # round 1 gets the JSON round trip that later rounds read back

    # Retrained at the same path (here: a stricter calibrated threshold): the cache must miss.
    stricter = SafetyClassifier(dataclasses.replace(student.config, threshold=0.999999), student.encoder, student.head)
    stricter.save(folder)
    retrained = FedSafeSession(session.config, session.state)
    assert retrained.sanitize(recs)[0]["chosen"] == UNSAFE
    assert retrained.metrics["fedsafe.sanitize.cached"] == 0 and retrained.metrics["fedsafe.sanitize.unsafe"] == 0
