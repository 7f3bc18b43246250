"""Both formats read into one shape; OpenAI's flags mapped to Qwen3Guard's categories as documented."""

import json

import pytest

from guardstream.evaluation.dataset import DatasetError, load


def test_openai_s_moderation_release_maps_its_flags_to_qwen3guard_categories(tmp_path):
    rows = [{"prompt": "a", "S": 0, "H": 0, "V": 0, "HR": 0, "SH": 0, "S3": 0, "H2": 0, "V2": 0},
            {"prompt": "b", "H2": 1, "V": 1, "SH": 0},
            {"prompt": "c", "S3": 1, "HR": 1, "SH": 1}]
    path = tmp_path / "openai.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = load(path)
    assert [(i.kind, i.label, i.categories) for i in items] == [
        ("prompt", "Safe", []), ("prompt", "Unsafe", ["Unethical Acts", "Violent"]),
        ("prompt", "Unsafe", ["Unethical Acts", "Sexual Content or Sexual Acts", "Suicide & Self-Harm"])]
    assert items[1].messages[0].content == "b" and items[1].id == "line-2"


def test_the_project_s_format_by_split_and_a_bad_line_said_with_its_number(tmp_path):
    good = {"id": "x", "split": "heldout", "kind": "response", "label": "Unsafe", "categories": ["PII"],
            "refusal": "No", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "split": "train", "id": "y"}) + "\n")
    assert [i.id for i in load(path, "heldout")] == ["x"] and len(load(path)) == 2
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "categories": ["Rudeness"]}) + "\n")
    with pytest.raises(DatasetError, match=r"mine.jsonl:2: not a labelled item"):
        load(path)
    path.write_text(json.dumps(good) + "\n")
    with pytest.raises(DatasetError, match="no labelled item in split 'test'"):
        load(path, "test")
