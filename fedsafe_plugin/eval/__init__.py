"""Safety evaluation harness: harmful, jailbreak and over-refusal rates and utility of a causal LM.

`evaluate(model, tokenizer, suite)` scores held-out contrasts by length-normalised log-prob
margins (any model, with or without LoRA); `load_judge()` adds classifier-judged generations.
Suites: `demo_suite()` (synthetic, shipped) and `realdata.load_suite(data_dir=...)` (public data).
"""

from fedsafe_plugin.eval.harness import evaluate, generate_answers, load_judge
from fedsafe_plugin.eval.metrics import ContrastScore, bad_rate, mean_logp, mean_margin
from fedsafe_plugin.eval.models import load_causal_lm
from fedsafe_plugin.eval.suites import Contrast, EvalSuite, demo_suite

__all__ = [
    "Contrast", "ContrastScore", "EvalSuite", "bad_rate", "demo_suite", "evaluate",
    "generate_answers", "load_causal_lm", "load_judge", "mean_logp", "mean_margin",
]
