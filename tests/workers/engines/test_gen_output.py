import pytest

from guardstream.schemas import Moderate, RiskLevel
from guardstream.workers.engines.gen_output import MalformedOutput, parse_gen_output


def test_prompt_verdict():
    j = parse_gen_output("Safety: Unsafe\nCategories: Violent, PII", Moderate.prompt)
    assert (j.risk_level, j.categories, j.refusal) == (RiskLevel.unsafe, ["Violent", "PII"], None)


def test_response_verdict_with_refusal_and_no_category():
    j = parse_gen_output("Safety: Safe\nCategories: None\nRefusal: Yes", Moderate.response)
    assert (j.risk_level, j.categories, j.refusal) == (RiskLevel.safe, [], True)


def test_controversial_and_surrounding_whitespace():
    j = parse_gen_output("  Safety: Controversial \nCategories: Politically Sensitive Topics\n", Moderate.prompt)
    assert j.risk_level is RiskLevel.controversial and j.categories == ["Politically Sensitive Topics"]


@pytest.mark.parametrize("text, moderate, fragment", [
    ("", Moderate.prompt, "no 'Safety:' line"),
    ("I think this is fine", Moderate.prompt, "no 'Safety:' line"),
    ("Safety: Maybe\nCategories: None", Moderate.prompt, "unknown safety label"),
    ("Safety: Error\nCategories: None", Moderate.prompt, "cannot answer"),
    ("Safety: Unsafe", Moderate.prompt, "no 'Categories:' line"),
    ("Safety: Unsafe\nCategories: Dragons", Moderate.prompt, "unknown categories"),
    ("Safety: Safe\nCategories: None", Moderate.response, "needs 'Refusal: Yes|No'"),
    ("Safety: Safe\nCategories: None\nRefusal: Perhaps", Moderate.response, "needs 'Refusal: Yes|No'"),
])
def test_malformed_output_is_reported_not_guessed(text, moderate, fragment):
    with pytest.raises(MalformedOutput, match=fragment) as raised:
        parse_gen_output(text, moderate)
    for word in ("Maybe", "Dragons", "Perhaps", "fine"):  # what the model wrote may repeat the moderated text
        assert word not in str(raised.value)
