"""Qwen3Guard's label vocabulary, as the model cards define it: the words a verdict carries."""

RISK_LABELS = ("Safe", "Unsafe", "Controversial")  # the words after `Safety:`, in the order Gen scores them
RESPONSE_CATEGORIES = (
    "Violent", "Non-violent Illegal Acts", "Sexual Content or Sexual Acts", "PII", "Suicide & Self-Harm",
    "Unethical Acts", "Politically Sensitive Topics", "Copyright Violation",
)
QUERY_CATEGORIES = (*RESPONSE_CATEGORIES, "Jailbreak")  # a prompt may also be a jailbreak attempt
