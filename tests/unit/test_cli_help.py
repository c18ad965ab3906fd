"""``acr-replicator --help`` and each command's: every command listed, plain text."""

from __future__ import annotations

import pytest

from replicator.cli import COMMANDS, main


@pytest.mark.parametrize("argv", [[], *[[name] for name in COMMANDS]])
def test_help_is_plain_text_and_exits_zero(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([*argv, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: acr-replicator")
    assert "``" not in text  # the modules' reST quoting stays out of the terminal
    if not argv:
        assert all(name in text for name in COMMANDS)
