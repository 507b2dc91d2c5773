"""Bad input ends a command with one clear line; PSYAU_TRACEBACK=1 shows the traceback."""
import re

import pytest

from psyau_graph.cli import main


def test_missing_sheet_is_one_clear_line_and_traceback_on_request(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("PSYAU_TRACEBACK", raising=False)
    argv = ["preprocess", "--annotations", str(tmp_path / "none.xlsx"), "--dataset", "casme2",
            "--frames", str(tmp_path), "--out", str(tmp_path / "cache")]
    assert main(argv) == 2
    assert re.search(r"^psyau preprocess: error: annotation file not found: .*none\.xlsx",
                     capsys.readouterr().err)
    monkeypatch.setenv("PSYAU_TRACEBACK", "1")
    with pytest.raises(FileNotFoundError, match="none.xlsx"):
        main(argv)
    assert not (tmp_path / "cache").exists()
