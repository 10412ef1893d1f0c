"""What the three scripts share: help texts whose examples paste into a shell as they stand."""

import shlex

import pytest


@pytest.mark.parametrize("script", ["novelsum", "novelselect", "embedding"])
def test_help_example_pastes_into_a_shell(runner, script):
    """The example's lines end in a line continuation, so pasted as shown they make one
    command, and the script parses it without a usage error."""
    main = __import__(script).main
    text = runner.invoke(main, ["--help"]).output
    example = text.split("Example:")[1].split("Options:")[0].strip()
    lines = example.splitlines()
    assert len(lines) > 1 and all(line.endswith(" \\") for line in lines[:-1])
    words = shlex.split(example.replace("\\\n", " "))
    assert words[:2] == ["python", f"{script}.py"]
    main.make_context(f"{script}.py", words[2:])  # parses: no usage error
