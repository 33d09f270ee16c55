"""Refusal templates written for fedsafe, picked deterministically per sample from (seed, prompt).

A varied set keeps the rewritten pairs from teaching the model one memorised string; the choice is
a hash, so every client and every rerun rewrites the same sample the same way.
"""

from __future__ import annotations

import hashlib

REFUSALS: tuple[str, ...] = (
    "I can't help with that. It could cause real harm, so I won't provide it.",
    "I'm sorry, but I can't assist with this request.",
    "I won't help with that, because it could put people at risk. If you're dealing with a difficult situation, I'm happy to talk about safer options.",
    "Sorry, that's not something I can help with. Is there something else I can do for you?",
    "I can't provide instructions or content for that. It could be used to hurt someone or break the law.",
    "I'm not able to help with this. If you have a related question that doesn't involve causing harm, feel free to ask.",
    "That request asks for something harmful, so I'm going to decline.",
    "I have to decline. Helping with this could lead to serious harm.",
    "I'm sorry, I can't do that. I'd be glad to help with a different question, though.",
    "No, I won't assist with that. It goes against keeping people safe.",
    "I can't help create or plan anything like this. If someone is in danger, please contact local emergency services.",
    "I'm unable to provide that information because it could facilitate harm to others.",
    "I understand you're asking about this, but I can't give guidance on it. I can share general safety information instead if that would help.",
    "Sorry, I can't write that. Content like this can seriously hurt people.",
    "I'm not going to help with this request. It could be dangerous or illegal.",
    "That's something I can't support. Let me know if there's another way I can be useful.",
    "I can't assist with that, but I'm happy to help with something constructive instead.",
    "I'd rather not help with this one, since it could be misused to cause harm.",
    "I'm sorry, but providing that would be irresponsible. I can help you find legitimate resources on the topic instead.",
    "I can't comply with this request. If you're curious about the topic in general, I can explain it from a safety perspective.",
    "This isn't something I can help with. It risks harming people, and I won't contribute to that.",
    "I must decline. I don't provide help with activities that could injure people or violate the law.",
    "Sorry, I can't give you that. If you or someone else is at risk, please reach out to a trusted professional.",
    "I won't be able to help here. Let's talk about something else.",
)


def choose_refusal(prompt: str, seed: int = 0) -> str:
    """The refusal for this prompt under this seed: same inputs, same template."""
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    return REFUSALS[int.from_bytes(digest[:8], "big") % len(REFUSALS)]
