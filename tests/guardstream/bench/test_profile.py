"""The profile's top entries are the innermost frames of py-spy's collapsed stacks, by samples."""

from guardstream.bench.profile import top_functions


def test_self_samples_come_from_each_stacks_innermost_frame():
    collapsed = "main (a.py:1);loop (a.py:5);select (sel.py:9) 30\nmain (a.py:1);parse (p.py:2) 10\n" \
                "main (a.py:1);loop (a.py:5);select (sel.py:9) 20\nnot a stack line\n"
    assert top_functions(collapsed) == [("select (sel.py:9)", 50 / 60), ("parse (p.py:2)", 10 / 60)]
